"""Speed of the demo, as figures measured in one run (this machine is shared and noisy).

    python benchmarks/app_speed.py [--port 7870] [--models CNN+LSTM,ResNet50]

  start-up   seconds from `python app.py` (every bundled model, or those --models names) to a page that answers
             (target < 20 s)
  /compare   median of 20 warm calls through gradio_client of the documented one-argument call, i.e. the
             default pair: two predictions, two heatmaps (target < 0.7 s)
  load       16 concurrent clients sending 5 /compare requests each: all must succeed
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "pneumonia_person142_bacteria_683.jpeg"


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


def main():
    from gradio_client import Client, handle_file

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=7870)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--models", help="the bundled models to load, e.g. CNN+LSTM,ResNet50 (default: all)")
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}/"
    launched = time.perf_counter()
    process = start_demo(args.port, args.models, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        startup = wait_until_serving(url, process)
        print(f"start-up: {startup:.1f} s to a serving page (target < 20 s; launched at t=0, "
              f"{time.perf_counter() - launched:.1f} s)")
        client = Client(url, verbose=False)
        image = handle_file(str(EXAMPLE))
        for _ in range(3):
            client.predict(image, api_name="/compare")
        timings = []
        for _ in range(20):
            start = time.perf_counter()
            client.predict(image, api_name="/compare")
            timings.append(time.perf_counter() - start)
        print(f"/compare warm: median {statistics.median(timings):.3f} s, "
              f"p90 {sorted(timings)[17]:.3f} s over 20 calls (target median < 0.7 s)")

        def one_client(_):
            own = Client(url, verbose=False)
            ok = 0
            for _ in range(args.requests):
                own.predict(handle_file(str(EXAMPLE)), api_name="/compare")
                ok += 1
            return ok

        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(lambda i: _safe(one_client, i), range(args.clients)))
        succeeded = sum(r for r in results if isinstance(r, int))
        failures = [r for r in results if not isinstance(r, int)]
        total = args.clients * args.requests
        print(f"load: {succeeded}/{total} requests succeeded from {args.clients} concurrent clients in "
              f"{time.perf_counter() - start:.1f} s" + (f"; failures: {failures[:3]}" if failures else ""))
    finally:
        stop_demo(process)


def _safe(function, argument):
    try:
        return function(argument)
    except Exception as error:  # report, do not hide, a failed client
        return f"{type(error).__name__}: {error}"


if __name__ == "__main__":
    main()
