"""Speed and memory of batch scoring, as ratios measured in one run (this machine is shared and noisy).

    python benchmarks/batch_eval_speed.py [--data ../shared/data/chest_xray/test] [--images N] [--stream-images 20000]
                                          [--ray]

For each bundled model, on the official test folder:
  forward    images/s of the model alone on pre-decoded tensors
  pipeline   images/s of batch scoring (decode overlapping inference), as batch_eval.py runs it
  naive      images/s of decoding one image and calling model.predict on it (the seeds' way)
Targets: pipeline >= 0.9 x forward, pipeline >= 5 x naive.
Then, on full-size copies of the same X-rays (real radiographs are 1,000-4,000 px a side; the dataset was
shrunk to 224 px): pipeline images/s on 2048 px JPEG copies against the 224 px originals (target >= 0.8x,
with the peak memory flat), and on 2048 px 16-bit DICOM copies (printed; DICOM has no reduced decode).

The two sides of a ratio are timed in turns, a chunk of --chunk images at a time (A B B A A B...), so that a
change in the machine's load lands on both; the ratio printed is the median of the chunks' ratios, with
their range beside it (on a shared machine the range is the noise).
Then batch_eval.py scores a folder of N links to the test images in a child process, whose peak RSS
must stay under 3 GB.
With --ray, each model's images/s with the Ray Data engine (pneumo.batch.ray_engine, Ray started here beforehand,
the model's actor started within the time) against the local engine's, on the same folder.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from pneumo.hub.bundled import BUNDLED_MODELS  # noqa: E402

BUNDLED = [folder for _, folder in BUNDLED_MODELS.values()]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rate(count: int, seconds: float) -> float:
    return count / seconds


def chunks(items, size: int) -> list:
    return [items[start:start + size] for start in range(0, len(items), size)]


def in_turns(side_a, side_b, chunks_a, chunks_b) -> dict:
    """Time side_a(chunk) and side_b(chunk) on matching chunks, in turns (A B, then B A, ...): images/s of each
    side over all its chunks, and the median and range of the chunks' b/a ratios."""
    import numpy as np

    seconds_a, seconds_b = [], []
    for turn, (chunk_a, chunk_b) in enumerate(zip(chunks_a, chunks_b)):
        order = [(side_a, chunk_a, seconds_a), (side_b, chunk_b, seconds_b)]
        for side, chunk, seconds in order[::-1] if turn % 2 else order:
            start = time.perf_counter()
            side(chunk)
            seconds.append(time.perf_counter() - start)
    count = sum(len(chunk) for chunk in chunks_a)
    ratios = np.array(seconds_a) / np.array(seconds_b)
    return {"a": rate(count, sum(seconds_a)), "b": rate(count, sum(seconds_b)), "ratio": float(np.median(ratios)),
            "low": float(ratios.min()), "high": float(ratios.max())}


def spread(result: dict) -> str:
    return f"{result['ratio']:.2f} ({result['low']:.2f}-{result['high']:.2f})"


def measure(reference: str, files, batch_size: int, chunk: int) -> dict:
    import numpy as np

    from pneumo import load_predictor
    from pneumo.batch.scoring import score

    predictor = load_predictor(reference)
    images = np.stack([predictor.load_image(f.path) for f in files])
    predictor.probabilities(images[:batch_size])  # warm-up: graph tracing, memory pools
    score(predictor, files[:batch_size], batch_size=batch_size)

    def forward(tensors):
        for i in range(0, len(tensors), batch_size):
            predictor.probabilities(tensors[i:i + batch_size])

    turns = in_turns(forward, lambda chunk: score(predictor, chunk, batch_size=batch_size),
                     chunks(images, chunk), chunks(files, chunk))

    naive_files = files[:100]
    start = time.perf_counter()
    for f in naive_files:
        predictor.model.predict(predictor.load_image(f.path)[None], verbose=0)
    naive = rate(len(naive_files), time.perf_counter() - start)
    return {"model": predictor.name, "forward": turns["a"], "pipeline": turns["b"], "naive": naive,
            "pipe/fwd": spread(turns)}


def full_size_copies(files, folder: Path, suffix: str, side: int = 2048) -> list:
    """2048 px copies of `files` (bicubic), as quality-90 JPEG or 16-bit DICOM (12-bit data), with their labels."""
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import write_dicom
    from pneumo.batch.scoring import discover

    for f in files:
        target = folder / f.relative.parent / f"{f.relative.stem}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        large = Image.open(f.path).convert("L").resize((side, side), Image.BICUBIC)
        if suffix == ".dcm":
            write_dicom(target, np.asarray(large, np.uint32) * 4095 // 255)
        else:
            large.save(target, quality=90)
    return discover(folder)


def full_size_rates(files, batch_size: int, dicom_images: int, chunk: int) -> None:
    from pneumo import load_predictor
    from pneumo.batch.scoring import score

    with tempfile.TemporaryDirectory() as folder:
        jpegs = full_size_copies(files, Path(folder) / "jpeg", ".jpeg")
        dicoms = full_size_copies(files[:dicom_images], Path(folder) / "dicom", ".dcm")
        size = sum(f.path.stat().st_size for f in jpegs) / len(jpegs) / 1024
        print(f"\nfull size: {len(jpegs)} JPEG copies at 2048 px (mean {size:.0f} KB), {len(dicoms)} 16-bit DICOM copies")
        print(f"{'model':<20}{'224px/s':>9}{'2048 JPEG/s':>13}{'ratio (range)':>18}{'peak +GB':>10}{'2048 DICOM/s':>14}")
        for reference in BUNDLED:
            predictor = load_predictor(str(reference))

            def scored(chunk):
                score(predictor, chunk, batch_size=batch_size)

            scored(files[:batch_size])  # warm-up
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            turns = in_turns(scored, scored, chunks(files, chunk), chunks(jpegs, chunk))
            growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024**2
            start = time.perf_counter()
            scored(dicoms)
            dicom = rate(len(dicoms), time.perf_counter() - start)
            print(f"{predictor.name:<20}{turns['a']:>9.1f}{turns['b']:>13.1f}{spread(turns):>18}{growth:>10.2f}"
                  f"{dicom:>14.1f}")


def ray_rates(files, data: Path, batch_size: int) -> None:
    """Images/s of the Ray engine against the local engine, per bundled model, on the same files."""
    from pneumo import load_predictor
    from pneumo.batch.scoring import score
    from pneumo.batch.ray_engine import import_ray, ray_scores, start_ray
    from pneumo.batch.storage import list_files

    ray = import_ray()
    started = start_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False
    filesystem, ray_files, sizes = list_files(data)
    print(f"\nRay engine on {len(ray_files)} files, {int(ray.cluster_resources().get('CPU', 0))} CPUs in the cluster")
    print(f"{'model':<10}{'local/s':>9}{'ray/s':>9}{'ray/local':>11}")
    for reference in BUNDLED:
        predictor = load_predictor(str(reference))
        score(predictor, files[:batch_size], batch_size=batch_size)  # warm-up
        start = time.perf_counter()
        score(predictor, files, batch_size=batch_size)
        local = rate(len(files), time.perf_counter() - start)
        start = time.perf_counter()
        ray_scores(predictor, filesystem, ray_files, sizes, batch_size)
        on_ray = rate(len(ray_files), time.perf_counter() - start)
        print(f"{predictor.name:<10}{local:>9.1f}{on_ray:>9.1f}{on_ray / local:>11.2f}")
    if started:
        ray.shutdown()


def peak_rss_of_streaming_run(data: Path, count: int) -> tuple[float, float]:
    """(peak RSS in GB, seconds) of batch_eval.py on a folder of `count` symlinks to the images in `data`."""
    sources = sorted(p for p in data.rglob("*") if p.is_file())
    with tempfile.TemporaryDirectory() as folder:
        for i in range(count):
            source = sources[i % len(sources)]
            target = Path(folder) / source.parent.name / f"{i:06d}_{source.name}"
            target.parent.mkdir(exist_ok=True)
            target.symlink_to(source)
        start = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "batch_eval.py"), folder, "--out", str(Path(folder) / "out")],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak_kb / 1024**2, seconds


def main():
    from pneumo.batch.scoring import discover

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "chest_xray" / "test")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, help="an evenly spaced sample of this many images (default: all)")
    parser.add_argument("--chunk", type=int, default=64, help="images timed in one turn of a ratio's two sides")
    parser.add_argument("--stream-images", type=int, default=20000, help="0 skips the memory run")
    parser.add_argument("--dicom-images", type=int, default=100, help="full-size DICOM copies (8 MB each); "
                        "0 skips the full-size runs")
    parser.add_argument("--ray", action="store_true", help="also the Ray engine's images/s against the local engine's "
                        "(needs requirements-ray.txt)")
    args = parser.parse_args()
    files = discover(args.data)
    if args.images and args.images < len(files):
        files = files[::len(files) // args.images][:args.images]
    print(f"{len(files)} images from {args.data}, batch {args.batch_size}, {os.cpu_count()} CPUs")
    print(f"{'model':<20}{'forward/s':>11}{'pipeline/s':>12}{'naive/s':>9}{'pipe/fwd (range)':>20}{'pipe/naive':>12}")
    for reference in BUNDLED:
        m = measure(str(reference), files, args.batch_size, args.chunk)
        print(f"{m['model']:<20}{m['forward']:>11.1f}{m['pipeline']:>12.1f}{m['naive']:>9.1f}"
              f"{m['pipe/fwd']:>20}{m['pipeline'] / m['naive']:>12.1f}")
    if args.dicom_images:
        full_size_rates(files, args.batch_size, args.dicom_images, args.chunk)
    if args.ray:
        ray_rates(files, args.data, args.batch_size)
    if args.stream_images:
        peak, seconds = peak_rss_of_streaming_run(args.data, args.stream_images)
        print(f"batch_eval.py on {args.stream_images} images (every bundled model): peak RSS {peak:.2f} GB "
              f"(target < 3 GB), {seconds:.0f} s")


if __name__ == "__main__":
    main()
