"""Soak test of the demo: many calls from concurrent clients, then what the demo kept of them, measured in one run.

    python benchmarks/soak.py [--clients 16] [--calls 1000] [--models CNN+LSTM,ResNet50] [--port 7871]

app.py runs in a process of its own (benchmarks/app_speed.py's start_demo: every bundled model, or those --models
names), with GRADIO_TEMP_DIR and TMPDIR in a new folder of this run and its stdout and stderr captured. --clients
gradio_client clients share --calls calls, /compare and /report in turn (the default pair, the example X-rays in
turn). Every report fills the metadata fields (app.py METADATA_FIELDS) with a made-up patient whose name is in
Latin, Chinese and Arabic script. A client fetches each /compare's heatmaps and each /report's PDF as a browser
does, except the last PDF it asks for, which it fetches once all calls have ended.

  answers   every call answered, every PDF and heatmap fetched (target: no error; the first messages printed)
  memory    the demo's resident memory after a warm-up (the first 5% of the calls, at least one per client) and at
            the end, both with no call in flight (target: growth under 10%), with app.py's cap of glibc's malloc
            arenas (or the MALLOC_ARENA_MAX this run is given)
  files     the demo's temporary folders after the calls, after the held-back PDFs are fetched, and after the demo
            stops. A PDF report goes once downloaded (target: none left); heatmaps (pneumo-served-*) and uploads
            stay until Gradio's sweep an hour later (pneumo.demo.served_files), so they and whatever else Gradio or the
            libraries leave (its cache, TMPDIR) are counted; the empty files Gradio leaves at the top of its cache go
            once a minute old, at the reaper's next round (target: none two minutes old after the calls)
  stop      SIGTERM, as `docker stop` sends it: the demo's exit status (target: 0), and what it left in Gradio's
            cache (target: no report, heatmap, upload or empty file; the copies of the example X-rays that
            gr.Examples makes stay, as Gradio means them to, and the uploads here are those X-rays)
  metadata  each script's part of the name, raw or escaped, in the demo's stdout and stderr (target: nowhere), and
            in the files left in its temporary folders
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app_speed import REPO, start_demo, stop_demo, wait_until_serving

sys.path.insert(0, str(REPO))
from pneumo.demo.pdf_report import METADATA_FIELDS
from pneumo.demo.served_files import EMPTY_FILE_AGE_S, IMAGE_PREFIX, REPORT_PREFIX

EXAMPLES = sorted((REPO / "examples").glob("*.jpeg"))
WARM_UP_SHARE = 0.05
MEMORY_GROWTH_TARGET = 0.10
# A made-up patient: each script's part of the name must reach no log and no file the demo keeps.
PATIENT = {"Latin": "Zenobia Quillfeather", "Chinese": "欧阳霞飞", "Arabic": "نور الهدى زيدان"}
METADATA = {"patient": " ".join(PATIENT.values()), "age": "4", "sex": "F", "exam_date": "2026-12-01",
            "physician": "Dr. Okafor", "notes": "soak test: cough for 3 days"}
KINDS = {"reports": f"PDF reports ({REPORT_PREFIX}*)", "images": f"heatmaps ({IMAGE_PREFIX}*)",
         "uploads": "uploads (Gradio's cache, a folder per content hash)",
         "examples": "Gradio's copies of the example X-rays, which it keeps (the X-rays uploaded here)",
         "loose": "files at the top of Gradio's cache", "gradio": "the rest of Gradio's cache", "tmp": "TMPDIR"}
SHOWN_ERRORS = 5


def call_plan(calls: int) -> list[tuple[str, Path]]:
    """/compare and /report in turn, each going through the example X-rays in turn."""
    return [("/compare" if i % 2 == 0 else "/report", EXAMPLES[i // 2 % len(EXAMPLES)]) for i in range(calls)]


def resident_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory (VmRSS), or its peak (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no {field} for process {pid}")


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:
        return response.read()


class SoakClient:
    """One client: its calls, the heatmaps and PDFs it fetches, and the PDF it holds back for the end."""

    def __init__(self, url: str):
        from gradio_client import Client

        # download_files=False: outputs come back as the server's file records, fetched here as a browser would.
        self.client = Client(url, verbose=False, download_files=False)
        self.held_pdf: str | None = None

    def compare(self, xray: Path) -> None:
        from gradio_client import handle_file

        outputs = self.client.predict(handle_file(str(xray)), api_name="/compare")
        for output in outputs:
            if isinstance(output, dict) and output.get("url"):  # a heatmap
                fetch(output["url"])

    def report(self, xray: Path) -> str | None:
        """Ask for a PDF and hold it back; returns the address of the one held back before, now to fetch."""
        from gradio_client import handle_file

        values = [METADATA[key] for key, _ in METADATA_FIELDS]
        pdf = self.client.predict(handle_file(str(xray)), *values, api_name="/report")
        earlier, self.held_pdf = self.held_pdf, pdf["url"]
        return earlier


class Soak:
    """The calls of one run, shared by the clients (one per worker thread), and what came of them."""

    def __init__(self, url: str, clients: int, pid: int):
        self.url, self.pid = url, pid
        self.pool = ThreadPoolExecutor(clients)
        self.local = threading.local()
        self.clients: list[SoakClient] = []
        self.lock = threading.Lock()
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.answered = 0
        self.pdfs = 0  # PDFs fetched whole
        self.done = 0
        self.samples: dict[int, float] = {}  # calls done -> resident MB, at checkpoints
        self.checkpoints: set[int] = set()

    def _client(self) -> SoakClient:
        if not hasattr(self.local, "client"):
            self.local.client = SoakClient(self.url)
            with self.lock:
                self.clients.append(self.local.client)
        return self.local.client

    def run(self, plan, checkpoints=()) -> None:
        self.checkpoints = {self.done + k for k in checkpoints}
        list(self.pool.map(lambda item: self._call(*item), plan))

    def _call(self, endpoint: str, xray: Path) -> None:
        start = time.perf_counter()
        earlier_pdf = None
        try:
            client = self._client()
            if endpoint == "/compare":
                client.compare(xray)
            else:
                earlier_pdf = client.report(xray)
            ok = True
        except Exception as error:  # noqa: BLE001  (counted and shown, never hidden)
            ok = False
            self._failed(endpoint, error)
        with self.lock:
            if ok:
                self.answered += 1
                self.seconds[endpoint].append(time.perf_counter() - start)
            self.done += 1
            if self.done in self.checkpoints:
                self.samples[self.done] = resident_mb(self.pid)
        if earlier_pdf:
            self.fetch_pdf(earlier_pdf)

    def fetch_pdf(self, url: str) -> None:
        try:
            if not fetch(url).startswith(b"%PDF"):
                raise ValueError("the download is not a PDF")
            with self.lock:
                self.pdfs += 1
        except Exception as error:  # noqa: BLE001  (counted and shown)
            self._failed("PDF download", error)

    def fetch_held_pdfs(self) -> int:
        held = [client.held_pdf for client in self.clients if client.held_pdf]
        list(self.pool.map(self.fetch_pdf, held))
        return len(held)

    def _failed(self, what: str, error: Exception) -> None:
        with self.lock:
            self.errors.append(f"{what}: {type(error).__name__}: {str(error)[:200]}")


def example_copy(folder: Path) -> bool:
    """Whether a folder of Gradio's holds a copy of an example X-ray and nothing else: gr.Examples copies them into
    its cache when the page is built and keeps them past the demo's stop (they are this soak's uploads, too)."""
    try:
        files = list(folder.iterdir())
        return bool(files) and all((REPO / "examples" / path.name).is_file()
                                   and path.read_bytes() == (REPO / "examples" / path.name).read_bytes()
                                   for path in files)
    except OSError:  # deleted meanwhile
        return False


def temporary_files(gradio_dir: Path, tmp_dir: Path) -> dict[str, list[int]]:
    """What the demo's temporary folders hold, by KINDS: [top-level entries, files, bytes]."""
    found = {kind: [0, 0, 0] for kind in KINDS}
    for root in (gradio_dir, tmp_dir):
        for entry in (root.iterdir() if root.is_dir() else []):
            upload = entry.is_dir() and re.fullmatch("[0-9a-f]{64}", entry.name)
            kind = ("tmp" if root == tmp_dir else
                    "reports" if entry.name.startswith(REPORT_PREFIX) else
                    "images" if entry.name.startswith(IMAGE_PREFIX) else
                    "examples" if upload and example_copy(entry) else
                    "uploads" if upload else
                    "loose" if entry.is_file() else "gradio")
            found[kind][0] += 1
            for path in [entry] if entry.is_file() else (Path(d) / f for d, _, fs in os.walk(entry) for f in fs):
                try:
                    found[kind][2] += path.stat().st_size
                    found[kind][1] += 1
                except OSError:  # deleted meanwhile
                    pass
    return found


def old_empty_files(gradio_dir: Path, seconds: float) -> int:
    """How many empty files at the top of Gradio's cache are older than `seconds`."""
    count = 0
    for path in (gradio_dir.iterdir() if gradio_dir.is_dir() else []):
        try:
            count += path.is_file() and path.stat().st_size == 0 and time.time() - path.stat().st_mtime > seconds
        except OSError:  # deleted meanwhile
            pass
    return count


def name_spellings(name: str) -> list[str]:
    """How a log line can spell a name: as is, as Python's ascii() escapes it, percent-encoded, as UTF-8 bytes'
    repr."""
    return [name, ascii(name)[1:-1], urllib.parse.quote(name), repr(name.encode())[2:-1]]


def name_in_logs(log: str) -> dict[str, int]:
    """For each script, how many times a word of the patient's name appears in the log, in any spelling."""
    return {script: sum(log.count(spelling) for word in name.split() for spelling in set(name_spellings(word)))
            for script, name in PATIENT.items()}


def files_holding_the_name(roots) -> list[Path]:
    needles = [word.encode(codec) for name in PATIENT.values() for word in name.split()
               for codec in ("utf-8", "utf-16-le", "utf-16-be")]
    holding = []
    for root in roots:
        for folder, _, names in os.walk(root):
            for file_name in names:
                path = Path(folder) / file_name
                try:
                    content = path.read_bytes()
                except OSError:
                    continue
                if any(needle in content for needle in needles):
                    holding.append(path)
    return holding


def files_table(listings: dict[str, dict[str, list[int]]]) -> list[str]:
    lines = ["| temporary files (entries / files / MB) | " + " | ".join(listings) + " |",
             "|---|" + "---|" * len(listings)]
    for kind, label in KINDS.items():
        lines.append(f"| {label} | " + " | ".join(f"{n} / {files} / {size / 1e6:.1f}"
                                                   for n, files, size in (at[kind] for at in listings.values())) + " |")
    return lines


def verdict(met: bool, figures: str) -> str:
    return f"{'met' if met else 'NOT MET'} ({figures})"


def soak_demo(args, run_folder: Path) -> dict:
    """Launch the demo, make the calls, fetch the held-back PDFs, stop it: every figure of the run."""
    plan = call_plan(args.calls)
    warm_up = min(len(plan), max(math.ceil(WARM_UP_SHARE * len(plan)), args.clients))
    gradio_dir, tmp_dir = run_folder / "gradio", run_folder / "tmp"
    tmp_dir.mkdir()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(gradio_dir), "TMPDIR": str(tmp_dir), "PYTHONUNBUFFERED": "1"}
    url = f"http://127.0.0.1:{args.port}/"
    log_path = run_folder / "demo.log"
    with open(log_path, "wb") as log:
        process = start_demo(args.port, args.models, env=env, stdout=log, stderr=subprocess.STDOUT)
    run = {"plan": plan, "warm_up": warm_up, "log_path": log_path, "listings": {}}
    soak = None
    try:
        run["startup_s"] = wait_until_serving(url, process)
        soak = run["soak"] = Soak(url, args.clients, process.pid)
        start = time.perf_counter()
        soak.run(plan[:warm_up])
        run["warm_mb"] = resident_mb(process.pid)
        rest = len(plan) - warm_up
        soak.run(plan[warm_up:], checkpoints={math.ceil(rest * k / 10) for k in range(1, 10)})
        run["calls_s"] = time.perf_counter() - start
        run["end_mb"], run["peak_mb"] = resident_mb(process.pid), resident_mb(process.pid, "VmHWM")
        time.sleep(1)  # the server deletes a report just after its last byte is sent
        run["listings"]["after the calls"] = temporary_files(gradio_dir, tmp_dir)
        run["old_empty"] = old_empty_files(gradio_dir, 2 * EMPTY_FILE_AGE_S)
        run["held"] = soak.fetch_held_pdfs()
        time.sleep(1)
        run["listings"]["after the held-back PDFs"] = temporary_files(gradio_dir, tmp_dir)
        run["holding"] = files_holding_the_name([gradio_dir, tmp_dir])
    finally:
        if process.poll() is None:
            stop_demo(process)
        if soak:
            soak.pool.shutdown()
    run["exit_status"] = process.returncode
    run["listings"]["after the demo stopped"] = temporary_files(gradio_dir, tmp_dir)
    run["log"] = log_path.read_text(encoding="utf-8", errors="replace")
    run["in_log"] = name_in_logs(run["log"])
    return run


def print_figures(run: dict, args) -> None:
    """The figures as a short table, the temporary files, then a line per target."""
    plan, soak, listings, in_log = run["plan"], run["soak"], run["listings"], run["in_log"]
    warm_mb, end_mb = run["warm_mb"], run["end_mb"]
    compares, reports = sum(e == "/compare" for e, _ in plan), sum(e == "/report" for e, _ in plan)
    models = args.models or os.environ.get("PNEUMO_MODELS") or "every bundled model"
    growth = end_mb / warm_mb - 1
    reports_left = listings["after the held-back PDFs"]["reports"][0]
    images = listings["after the held-back PDFs"]["images"]
    arenas = (f"MALLOC_ARENA_MAX={os.environ['MALLOC_ARENA_MAX']} from the environment"
              if os.environ.get("MALLOC_ARENA_MAX") else "glibc's arenas capped by app.py")
    print(f"soak: {args.clients} clients, {len(plan)} calls ({compares} /compare, {reports} /report, the default "
          f"pair) against app.py with {models} ({arenas}); start-up {run['startup_s']:.1f} s, calls "
          f"{run['calls_s']:.0f} s ({len(plan) / run['calls_s']:.2f} calls/s)")
    print("| measure | figure |\n|---|---|")
    print(f"| calls answered | {soak.answered}/{len(plan)} |")
    print(f"| PDFs fetched whole | {soak.pdfs}/{len(soak.seconds['/report'])} ({run['held']} held back to the end) |")
    print(f"| errors | {len(soak.errors)} |")
    for endpoint, seconds in sorted(soak.seconds.items()):
        print(f"| {endpoint} seconds, median / max (with {args.clients} clients) | "
              f"{statistics.median(seconds):.2f} / {max(seconds):.2f} |")
    print(f"| resident memory after the warm-up ({run['warm_up']} calls) | {warm_mb:,.0f} MB |")
    print(f"| resident memory at the end | {end_mb:,.0f} MB |")
    print(f"| growth (peak) | {growth:+.1%} ({run['peak_mb']:,.0f} MB) |")
    print(f"| resident memory by tenth of the calls after the warm-up | "
          f"{' '.join(f'{mb:,.0f}' for _, mb in sorted(soak.samples.items()))} MB |")
    print(f"| patient name in the demo's output ({', '.join(PATIENT)}) | "
          f"{' / '.join(str(n) for n in in_log.values())} |")
    print(f"| files in the temporary folders holding the name | {len(run['holding'])} |")
    lines = run["log"].splitlines()
    print(f"| demo's output: lines, warnings, tracebacks | {len(lines)}, {sum('WARNING' in line for line in lines)}, "
          f"{sum(line.startswith('Traceback') for line in lines)} |")
    print(f"| demo's exit status on SIGTERM | {run['exit_status']} |")
    print("\n".join(files_table(listings)))
    for error in soak.errors[:SHOWN_ERRORS]:
        print(f"  error: {error}")
    answered = f"{soak.answered}/{len(plan)} answered, {len(soak.errors)} errors"
    print("targets:")
    print(f"  every call answered, every file fetched: {verdict(not soak.errors and soak.answered == len(plan), answered)}")
    print(f"  memory growth under {MEMORY_GROWTH_TARGET:.0%}: "
          f"{verdict(growth < MEMORY_GROWTH_TARGET, f'{growth:+.1%}, {warm_mb:,.0f} -> {end_mb:,.0f} MB')}")
    print(f"  no PDF report left once downloaded: {verdict(reports_left == 0, f'{reports_left} of {reports} left')}")
    holding = len(run["holding"])
    print(f"  patient name in no log: {verdict(not any(in_log.values()), f'{sum(in_log.values())} occurrences')}"
          f"; in no temporary file: {verdict(not holding, f'{holding} files')}")
    old_empty, loose = run["old_empty"], listings["after the calls"]["loose"][0]
    print(f"  no empty file two minutes old at the top of Gradio's cache after the calls: "
          f"{verdict(old_empty == 0, f'{old_empty} such; {loose} files there in all')}")
    status = run["exit_status"]
    stopped = listings["after the demo stopped"]
    left = {kind: stopped[kind][0] for kind in ("reports", "images", "uploads", "loose")}
    left_text = (", ".join(f"{n} {kind}" for kind, n in left.items())
                 + f"; {stopped['examples'][0]} copies of the example X-rays, kept by Gradio")
    print(f"  SIGTERM ends the demo with status 0: {verdict(status == 0, f'status {status}')}; "
          f"leaving nothing in Gradio's cache: {verdict(not any(left.values()), left_text)}")
    print(f"heatmaps stay until Gradio's sweep deletes them an hour after they were made (pneumo.demo.served_files), "
          f"or the demo stops: {images[0]} folders, {images[2] / 1e6:.1f} MB for {compares} /compare calls; uploads: "
          f"one folder per distinct X-ray, likewise (here the {len(EXAMPLES)} examples, whose copies Gradio keeps)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--models", help="the bundled models to load, e.g. CNN+LSTM,ResNet50 (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (temporary files, demo log)")
    args = parser.parse_args(argv)
    run_folder = Path(tempfile.mkdtemp(prefix="pneumo-soak-"))
    run = soak_demo(args, run_folder)
    print_figures(run, args)
    if args.keep or run["soak"].errors or any(run["in_log"].values()) or run["holding"]:
        print(f"kept: {run_folder} (demo log: {run['log_path']})")
    else:
        shutil.rmtree(run_folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
