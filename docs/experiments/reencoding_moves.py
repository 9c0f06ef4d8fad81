"""How far P(PNEUMONIA) moves when validation X-rays are re-encoded as JPEG (quality 95, as tests/test_encodings.py
writes rgb.jpg) against a lossless PNG of the same pixels, over the whole validation split of the model folders
given: one near-threshold X-ray in the encoding test is one draw, this is the distribution.

    PYTHONPATH=. python docs/experiments/reencoding_moves.py models/mobilenet-v2 runs/OTHER [...] \
        --data ../shared/data/chest_xray [--upscale 2048]

Printed per model: the median, 95th percentile and largest move, and the fraction of X-rays moved past 0.02,
over all validation X-rays and over those near the model's threshold (logit within 1 of it), where a move can
change the decision. The test set is never read.
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pneumo.hub import model_folder
from pneumo.prediction.predictor import Predictor


def logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def probabilities(predictor, paths, batch_size=32) -> np.ndarray:
    return np.concatenate([
        predictor.probabilities(np.stack([predictor.load_image(p) for p in paths[i:i + batch_size]]))
        [:, predictor.positive_index] for i in range(0, len(paths), batch_size)])


parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("models", nargs="+")
parser.add_argument("--data", required=True)
parser.add_argument("--upscale", type=int, metavar="SIDE",
                    help="save the JPEG as a bicubic upscale to this side (2048: tests/test_encodings.py's upscaled "
                         "copy) instead of at its own size")
args = parser.parse_args()
split = pd.read_csv(Path(args.models[0]) / model_folder.SPLIT_FILE)
validation = split[split.split == model_folder.VALIDATION_SPLIT].path.tolist()
work = Path(tempfile.mkdtemp())
lossless, reencoded = [], []
for index, relative in enumerate(validation):
    gray = Image.open(Path(args.data) / relative).convert("L")
    lossless.append(work / f"{index}.png")
    reencoded.append(work / f"{index}.jpg")
    gray.save(lossless[-1])
    (gray.resize((args.upscale, args.upscale), Image.BICUBIC) if args.upscale else gray).save(
        reencoded[-1], format="JPEG", quality=95)
for folder in args.models:
    predictor = Predictor.from_folder(folder)
    before, after = probabilities(predictor, lossless), probabilities(predictor, reencoded)
    moves = np.abs(after - before)
    near = np.abs(logit(before) - logit(predictor.threshold)) < 1.0
    for name, chosen in (("all", np.ones_like(near)), ("near threshold", near)):
        part = moves[chosen]
        print(f"{folder} ({name}, {chosen.sum()} X-rays): median {np.median(part):.4f}, "
              f"95th percentile {np.percentile(part, 95):.4f}, largest {part.max():.4f}, "
              f"past 0.02: {(part > 0.02).mean():.3f}", flush=True)
