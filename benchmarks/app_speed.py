"""Speed of the demo where a person waits, as figures measured in one run (this machine is shared and noisy: the
load average is printed with them).

    python benchmarks/app_speed.py [--port 7870] [--models CNN+LSTM,ResNet50] [--calls 20] [--clients 16]

  start-up   seconds from `python app.py` (every bundled model, or those --models names) to a page that answers,
             to the first /compare answered, and to one /predict answered by every model, which leaves every
             model loaded and warm (target: the page within 12 s)
  /compare   median and p90 of --calls warm calls through gradio_client of the documented one-argument call, i.e.
             the default pair: two predictions, two heatmaps (target: median < 0.4 s)
  breakdown  where one warm /compare's time goes:
             - in the handler (app.compare_models, in this process on the same models once the demo has stopped):
               decoding, preprocessing, each model's forward pass, its gradient pass (one explained pass less the
               forward pass alone), the colour map and overlay, the heatmap files, the rest (verdicts, banner)
             - in the server, through plain HTTP on one connection: the upload, the call (queue, handler, Gradio's
               pre- and postprocessing and events) and the download of the two heatmaps; Gradio's own share is the
               call less the handler
             - gradio_client's own: its median less the plain HTTP one (a new httpx client, with the certificates
               loaded, for each request it makes)
  load       --clients concurrent clients sending --requests /compare requests each: all must succeed (target: 80
             requests in under 24 s), and the CPU time each request cost the demo and the clients, which share
             this machine's cores

The demo and this process use a temporary Gradio cache of this run, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urljoin

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "pneumonia_person142_bacteria_683.jpeg"
WARM_UP_CALLS = 3


def start_demo(port: int, models: str | None = None, **popen) -> subprocess.Popen:
    """`python app.py` on a loopback port, in a process of its own, with every bundled model or those `models`
    names (comma-separated display names, as PNEUMO_MODELS takes them). `popen`: subprocess.Popen's options."""
    env = dict(popen.pop("env", None) or os.environ)
    if models:
        env["PNEUMO_MODELS"] = models
    return subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port)], cwd=REPO, env=env, **popen)


def stop_demo(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def wait_until_serving(url: str, process, limit_s: float = 180) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        if process.poll() is not None:
            raise SystemExit("app.py exited during start-up")
        try:
            urllib.request.urlopen(url, timeout=2)
            return time.perf_counter() - start
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"app.py did not answer within {limit_s} s")


def demo_models(models: str | None) -> list[str]:
    """The display names of the models the demo loads (all the bundled ones, or those `models` names)."""
    sys.path.insert(0, str(REPO))
    from pneumo.hub.bundled import BUNDLED_MODELS

    return [name.strip() for name in models.split(",")] if models else list(BUNDLED_MODELS)


def load_average() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def median_ms(values) -> str:
    return f"{statistics.median(values) * 1000:7.1f} ms"


def timed_calls(function, calls: int) -> list[float]:
    timings = []
    for _ in range(calls):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return timings


class PlainHttpCompare:
    """/compare through Gradio's HTTP API on one kept-alive connection, timed step by step: the upload, the call
    (queue join to its completion event) and the download of the heatmaps it returns."""

    def __init__(self, url: str):
        import httpx

        self.url, self.http = url, httpx.Client(timeout=60)
        config = self.http.get(urljoin(url, "config")).json()
        self.api = urljoin(url, config.get("api_prefix", "/gradio_api").strip("/") + "/")
        self.fn_index = next(index for index, dependency in enumerate(config["dependencies"])
                             if dependency.get("api_name") == "compare")
        components = {component["id"]: component for component in config["components"]}
        # The values a client leaves out: the Model A and B dropdowns' own.
        self.defaults = [components[i]["props"].get("value") for i in config["dependencies"][self.fn_index]["inputs"]]

    def call(self, path: Path) -> dict[str, float]:
        steps, start = {}, time.perf_counter()
        with open(path, "rb") as file:
            uploaded = self.http.post(urljoin(self.api, "upload"), files=[("files", (path.name, file))]).json()[0]
        steps["upload"], start = time.perf_counter() - start, time.perf_counter()
        session = uuid.uuid4().hex[:11]
        data = [{"path": uploaded, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}, *self.defaults[1:]]
        self.http.post(urljoin(self.api, "queue/join"), json={"data": data, "fn_index": self.fn_index,
                                                              "session_hash": session, "event_data": None,
                                                              "trigger_id": None}).raise_for_status()
        output = None
        with self.http.stream("GET", urljoin(self.api, "queue/data"), params={"session_hash": session}) as events:
            for line in events.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    output = message["output"]
                    break
        if not output or "data" not in output:
            raise RuntimeError(f"/compare failed: {output}")
        steps["call"], start = time.perf_counter() - start, time.perf_counter()
        for value in output["data"]:
            if isinstance(value, dict) and value.get("url"):  # a heatmap
                self.http.get(urljoin(self.url, value["url"])).raise_for_status()
        steps["downloads"] = time.perf_counter() - start
        return steps


def handler_breakdown(models: str | None, calls: int) -> dict[str, list[float]]:
    """Each step of app.compare_models on the default pair, timed apart in this process (`calls` times each), in
    the handler's order, then the handler as a whole (wall and CPU time, all threads)."""
    if models:
        os.environ["PNEUMO_MODELS"] = models
    sys.path.insert(0, str(REPO))
    import app
    from pneumo.prediction.analysis import heatmap_backdrop
    from pneumo.hub.bundled import load_models, model_references
    from pneumo.imaging.decoding import DecodedFile
    from pneumo.explain.overlays import overlay_heatmap
    from pneumo.demo.served_files import served_jpeg

    predictors = load_models(dict(list(model_references().items())[:2]))
    for _ in range(WARM_UP_CALLS):
        app.compare_models(predictors, str(EXAMPLE))
    steps: dict[str, list[float]] = {}

    def step(name, function, *arguments):
        start = time.perf_counter()
        value = function(*arguments)
        steps.setdefault(name, []).append(time.perf_counter() - start)
        return value

    def read_and_decode():
        decoded = DecodedFile(str(EXAMPLE))
        return decoded, heatmap_backdrop(decoded)

    for _ in range(calls):
        decoded, backdrop = step("read and decode the upload, the heatmaps' backdrop", read_and_decode)
        for name, predictor in predictors.items():
            image = step(f"{name}: preprocess", predictor.load_image, decoded)
            step(f"{name}: forward pass", predictor.assess, image[None])
            start = time.perf_counter()
            _, _, heatmaps = predictor.explained_assessment(image)
            # The explained pass less the forward pass alone: the gradients and the heatmaps' arithmetic.
            steps.setdefault(f"{name}: gradient pass, heatmaps", []).append(
                time.perf_counter() - start - steps[f"{name}: forward pass"][-1])
            overlay = step(f"{name}: colour map and overlay", overlay_heatmap, backdrop, heatmaps[-1])
            step(f"{name}: heatmap file", served_jpeg, overlay, "heatmap")
        cpu = time.process_time()
        step("handler in all", app.compare_models, predictors, str(EXAMPLE))
        steps.setdefault("handler CPU time", []).append(time.process_time() - cpu)
    return steps


def print_breakdown(steps: dict[str, list[float]], server: dict[str, list[float]], client: list[float]) -> None:
    handler, handler_cpu = steps.pop("handler in all"), steps.pop("handler CPU time")
    print("breakdown of one warm /compare (medians):")
    print("  in the handler (this process, the same two models):")
    for name, timings in steps.items():
        print(f"    {name:52s} {median_ms(timings)}")
    named = sum(statistics.median(timings) for timings in steps.values())
    print(f"    {'the rest (verdicts, banner, labels)':52s} {(statistics.median(handler) - named) * 1000:7.1f} ms")
    print(f"    {'handler in all':52s} {median_ms(handler)} ({median_ms(handler_cpu).strip()} of CPU time)")
    print("  in the server (plain HTTP, one connection):")
    print(f"    {'upload':52s} {median_ms(server['upload'])}")
    print(f"    {'call: queue, handler, Gradio pre/postprocessing':52s} {median_ms(server['call'])}")
    gradio_share = statistics.median(server["call"]) - statistics.median(handler)
    print(f"    {'  of which Gradio (the call less the handler)':52s} {gradio_share * 1000:7.1f} ms")
    print(f"    {'download of the two heatmaps':52s} {median_ms(server['downloads'])}")
    plain = [sum(parts) for parts in zip(*server.values())]
    print(f"    {'plain HTTP in all':52s} {median_ms(plain)}")
    print(f"  {'gradio_client own (its median less plain HTTP)':54s} "
          f"{(statistics.median(client) - statistics.median(plain)) * 1000:7.1f} ms")
    print(f"    {'  a new httpx client, which loads the certificates':52s} {median_ms(new_httpx_client(20))}, "
          "made for each of the upload, the call, its events and the 2 heatmaps")


def new_httpx_client(calls: int) -> list[float]:
    """What gradio_client pays for each of its requests: httpx.post() and httpx.stream() make a new client, with a
    new SSL context (the certificate store read and parsed), even for an http:// address."""
    import httpx

    return timed_calls(lambda: httpx.Client().close(), calls)


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user and system, all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=7870)
    parser.add_argument("--calls", type=int, default=20, help="warm calls timed, for each figure")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--models", help="the bundled models to load, e.g. CNN+LSTM,ResNet50 (default: all)")
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}/"
    cache = tempfile.TemporaryDirectory(prefix="app-speed-")
    os.environ["GRADIO_TEMP_DIR"] = str(Path(cache.name) / "gradio")  # read when gradio_client is imported
    from gradio_client import Client, handle_file

    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, {load_average()}")
    launched = time.perf_counter()
    process = start_demo(args.port, args.models, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        startup = wait_until_serving(url, process)
        client = Client(url, verbose=False)
        image = handle_file(str(EXAMPLE))
        client.predict(image, api_name="/compare")
        first_answer = time.perf_counter() - launched
        for name in demo_models(args.models):  # every model loaded and warm, as a person trying each one finds it
            client.predict(image, name, None, api_name="/predict")
        print(f"start-up: the page served {startup:.1f} s after launch (target < 12 s), the first /compare answered "
              f"at {first_answer:.1f} s, one /predict by every model at {time.perf_counter() - launched:.1f} s")
        for _ in range(WARM_UP_CALLS - 1):
            client.predict(image, api_name="/compare")
        timings = timed_calls(lambda: client.predict(image, api_name="/compare"), args.calls)
        print(f"/compare warm: median {statistics.median(timings):.3f} s, "
              f"p90 {statistics.quantiles(timings, n=10)[-1]:.3f} s over {args.calls} calls (target median < 0.4 s; "
              f"{load_average()})")
        plain = PlainHttpCompare(url)
        server: dict[str, list[float]] = {}
        for _ in range(args.calls):
            for name, seconds in plain.call(EXAMPLE).items():
                server.setdefault(name, []).append(seconds)

        def one_client(_):
            own = Client(url, verbose=False)
            for _ in range(args.requests):
                own.predict(handle_file(str(EXAMPLE)), api_name="/compare")
            return args.requests

        start, server_cpu, client_cpu = time.perf_counter(), cpu_seconds(process.pid), time.process_time()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(lambda i: _safe(one_client, i), range(args.clients)))
        elapsed = time.perf_counter() - start
        server_cpu, client_cpu = cpu_seconds(process.pid) - server_cpu, time.process_time() - client_cpu
        succeeded = sum(r for r in results if isinstance(r, int))
        failures = [r for r in results if not isinstance(r, int)]
        total = args.clients * args.requests
        print(f"load: {succeeded}/{total} requests succeeded from {args.clients} concurrent clients in "
              f"{elapsed:.1f} s, {total / elapsed:.2f} requests/s (target: 80 in < 24 s; {load_average()})"
              + (f"; failures: {failures[:3]}" if failures else ""))
        print(f"      CPU time per request: {server_cpu / total * 1000:.0f} ms in the demo, "
              f"{client_cpu / total * 1000:.0f} ms in the clients")
    finally:
        stop_demo(process)
    print_breakdown(handler_breakdown(args.models, args.calls), server, timings)
    print(load_average())
    cache.cleanup()


def _safe(function, argument):
    try:
        return function(argument)
    except Exception as error:  # report, do not hide, a failed client
        return f"{type(error).__name__}: {error}"


if __name__ == "__main__":
    main()
