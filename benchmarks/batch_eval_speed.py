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
Then batch_eval.py scores a folder of N links to the test images in a child process, whose peak RSS
must stay under 3 GB.
With --ray, each model's images/s with the Ray Data engine (pneumo.batch_ray, Ray started here beforehand,
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
from pneumo.bundled import BUNDLED_MODELS  # noqa: E402

BUNDLED = [folder for _, folder in BUNDLED_MODELS.values()]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rate(count: int, seconds: float) -> float:
    return count / seconds


def measure(reference: str, files, batch_size: int) -> dict:
    import numpy as np

    from pneumo import load_predictor
    from pneumo.batch import score

    predictor = load_predictor(reference)
    images = np.stack([predictor.load_image(f.path) for f in files])
    predictor.probabilities(images[:batch_size])  # warm-up: graph tracing, memory pools

    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        predictor.probabilities(images[i:i + batch_size])
    forward = rate(len(images), time.perf_counter() - start)

    score(predictor, files[:batch_size], batch_size=batch_size)
    start = time.perf_counter()
    score(predictor, files, batch_size=batch_size)
    pipeline = rate(len(files), time.perf_counter() - start)

    naive_files = files[:100]
    start = time.perf_counter()
    for f in naive_files:
        predictor.model.predict(predictor.load_image(f.path)[None], verbose=0)
    naive = rate(len(naive_files), time.perf_counter() - start)
    return {"model": predictor.name, "forward": forward, "pipeline": pipeline, "naive": naive}


def full_size_copies(files, folder: Path, suffix: str, side: int = 2048) -> list:
    """2048 px copies of `files` (bicubic), as quality-90 JPEG or 16-bit DICOM (12-bit data), with their labels."""
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import write_dicom
    from pneumo.batch import discover

    for f in files:
        target = folder / f.relative.parent / f"{f.relative.stem}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        large = Image.open(f.path).convert("L").resize((side, side), Image.BICUBIC)
        if suffix == ".dcm":
            write_dicom(target, np.asarray(large, np.uint32) * 4095 // 255)
        else:
            large.save(target, quality=90)
    return discover(folder)


def pipeline_rate(predictor, files, batch_size: int) -> tuple[float, float]:
    """(images/s of batch scoring, growth of this process's peak RSS in GB while scoring)."""
    from pneumo.batch import score

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    score(predictor, files, batch_size=batch_size)
    seconds = time.perf_counter() - start
    return rate(len(files), seconds), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024**2


def full_size_rates(files, batch_size: int, dicom_images: int) -> None:
    from pneumo import load_predictor

    with tempfile.TemporaryDirectory() as folder:
        jpegs = full_size_copies(files, Path(folder) / "jpeg", ".jpeg")
        dicoms = full_size_copies(files[:dicom_images], Path(folder) / "dicom", ".dcm")
        size = sum(f.path.stat().st_size for f in jpegs) / len(jpegs) / 1024
        print(f"\nfull size: {len(jpegs)} JPEG copies at 2048 px (mean {size:.0f} KB), {len(dicoms)} 16-bit DICOM copies")
        print(f"{'model':<10}{'224px/s':>9}{'2048 JPEG/s':>13}{'ratio':>7}{'peak +GB':>10}{'2048 DICOM/s':>14}")
        for reference in BUNDLED:
            predictor = load_predictor(str(reference))
            pipeline_rate(predictor, files[:batch_size], batch_size)  # warm-up
            small, _ = pipeline_rate(predictor, files, batch_size)
            large, growth = pipeline_rate(predictor, jpegs, batch_size)
            dicom, _ = pipeline_rate(predictor, dicoms, batch_size)
            print(f"{predictor.name:<10}{small:>9.1f}{large:>13.1f}{large / small:>7.2f}{growth:>10.2f}{dicom:>14.1f}")


def ray_rates(files, data: Path, batch_size: int) -> None:
    """Images/s of the Ray engine against the local engine, per bundled model, on the same files."""
    from pneumo import load_predictor
    from pneumo.batch import score
    from pneumo.batch_ray import import_ray, list_files, ray_scores, start_ray

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
    from pneumo.batch import discover

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "chest_xray" / "test")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, help="an evenly spaced sample of this many images (default: all)")
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
    print(f"{'model':<10}{'forward/s':>11}{'pipeline/s':>12}{'naive/s':>9}{'pipe/fwd':>10}{'pipe/naive':>12}")
    for reference in BUNDLED:
        m = measure(str(reference), files, args.batch_size)
        print(f"{m['model']:<10}{m['forward']:>11.1f}{m['pipeline']:>12.1f}{m['naive']:>9.1f}"
              f"{m['pipeline'] / m['forward']:>10.2f}{m['pipeline'] / m['naive']:>12.1f}")
    if args.dicom_images:
        full_size_rates(files, args.batch_size, args.dicom_images)
    if args.ray:
        ray_rates(files, args.data, args.batch_size)
    if args.stream_images:
        peak, seconds = peak_rss_of_streaming_run(args.data, args.stream_images)
        print(f"batch_eval.py on {args.stream_images} images (both models): peak RSS {peak:.2f} GB "
              f"(target < 3 GB), {seconds:.0f} s")


if __name__ == "__main__":
    main()
