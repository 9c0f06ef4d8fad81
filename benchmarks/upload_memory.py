"""Memory and time of one large upload in the demo, as ratios measured in one run.

    python benchmarks/upload_memory.py [--megapixels 50]

For a JPEG and a PNG (grayscale and RGB) of that size, a child process does what the demo does with one upload
(pneumo.prediction.analysis: the X-ray preview, the heatmaps' backdrop, and the inputs of a 224 px and a 150 px model, from
one DecodedFile) and prints the growth of its peak memory, its time and how many decodes it made, against one
decode of the whole image. Target: a JPEG never decoded whole (a small fraction of a full decode's memory), any
other format decoded once (the same memory as one full decode).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
sys.path.insert(0, {repo!r})
from pneumo.imaging import decoding
from pneumo.prediction.analysis import heatmap_backdrop, preview

def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

decodes, decode = [], decoding._decode
decoding._decode = lambda *args: decodes.append(args[2]) or decode(*args)
before, start = peak_mb(), time.perf_counter()
decoded = decoding.DecodedFile({path!r})
if {what!r} == "demo":
    preview(decoded); heatmap_backdrop(decoded); decoded.for_model(224, 224); decoded.for_model(150, 150)
else:
    decoded.plane()
print(json.dumps({{"mb": peak_mb() - before, "seconds": time.perf_counter() - start, "decodes": len(decodes)}}))
"""


def measure(path: Path, what: str) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), path=str(path), what=what)],
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout.splitlines()[-1])


def main(argv=None) -> int:
    import numpy as np
    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megapixels", type=float, default=50)
    args = parser.parse_args(argv)
    width = int((args.megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    rng = np.random.default_rng(0)
    texture = Image.fromarray((rng.random((height // 8, width // 8)) * 255).astype(np.uint8))
    gray = texture.resize((width, height), Image.BICUBIC)
    print(f"{width}x{height} ({width * height / 1e6:.0f} MP); the demo's decodes against one full decode")
    print(f"{'file':10s} {'demo MB':>8s} {'full MB':>8s} {'ratio':>6s} {'demo s':>7s} {'full s':>7s} {'decodes':>8s}")
    with tempfile.TemporaryDirectory() as folder:
        for name, image in (("gray.jpg", gray), ("rgb.jpg", Image.merge("RGB", [gray] * 3)), ("gray.png", gray),
                            ("rgb.png", Image.merge("RGB", [gray] * 3))):
            path = Path(folder) / name
            image.save(path, **({"quality": 90} if name.endswith(".jpg") else {"compress_level": 1}))
            demo, full = measure(path, "demo"), measure(path, "full")
            print(f"{name:10s} {demo['mb']:8.0f} {full['mb']:8.0f} {demo['mb'] / full['mb']:6.2f} "
                  f"{demo['seconds']:7.2f} {full['seconds']:7.2f} {demo['decodes']:8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
