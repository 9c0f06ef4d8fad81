"""Training speed of an architecture in float32 and in bfloat16 mixed precision, as a ratio from one run.

    python benchmarks/training_precision.py [--arch cnn_lstm] [--size 128] [--images 256]

Fits the model on random inputs for one epoch in each precision (after a warm-up epoch) and prints
images/s and bfloat16 / float32. On the 2-core CPU that trains pneumo's models, bfloat16 was 5x slower,
which is why the recipe trains in float32.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(arch: str, size: int, images: int, policy: str) -> float:
    """Images per second of one training epoch, in a fresh process (the precision policy is global)."""
    code = f"""
import sys, time, numpy as np, keras
sys.path.insert(0, {str(REPO)!r})
keras.mixed_precision.set_global_policy({policy!r})
from pneumo.networks import get_architecture
model = get_architecture({arch!r}).build(({size}, {size}, 3), 2)
x = np.random.rand({images}, {size}, {size}, 3).astype("float32")
y = np.eye(2, dtype="float32")[np.random.randint(0, 2, {images})]
model.compile(keras.optimizers.AdamW(1e-3), keras.losses.CategoricalCrossentropy(label_smoothing=0.05))
model.fit(x, y, batch_size=32, epochs=1, verbose=0)
start = time.perf_counter(); model.fit(x, y, batch_size=32, epochs=1, verbose=0)
print({images} / (time.perf_counter() - start))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="cnn_lstm")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    float32 = measure(args.arch, args.size, args.images, "float32")
    bfloat16 = measure(args.arch, args.size, args.images, "mixed_bfloat16")
    print(f"{args.arch} at {args.size} px: float32 {float32:.1f} img/s, bfloat16 {bfloat16:.1f} img/s, "
          f"bfloat16 / float32 = {bfloat16 / float32:.2f}")


if __name__ == "__main__":
    main()
