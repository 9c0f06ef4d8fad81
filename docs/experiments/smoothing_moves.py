"""How far a Gaussian smoothing of the model's input, added to a model folder without retraining, brings a validation
X-ray and its 2048 px upscale (JPEG, quality 95) together, and what it costs in ROC-AUC: the evidence for
`pneumo train --smoothing` (docs/training.md). Raw probabilities of the folder's calibration and threshold, so a
model retrained with the smoothing does better than this. The test set is never read.

    PYTHONPATH=. python docs/experiments/smoothing_moves.py models/efficientnet-lite0 --data ../shared/data/chest_xray
"""
import argparse
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import roc_auc_score

from pneumo.hub import model_folder
from pneumo.imaging.decoding import decode_for_model
from pneumo.prediction.predictor import Predictor


def logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("model")
parser.add_argument("--data", required=True)
parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.6, 1.0, 1.5])
args = parser.parse_args()
predictor = Predictor.from_folder(args.model)
split = pd.read_csv(Path(args.model) / model_folder.SPLIT_FILE)
validation = split[split.split == model_folder.VALIDATION_SPLIT]
size = (predictor.height, predictor.width)
own, upscaled = [], []
for relative in validation.path:
    gray = Image.open(Path(args.data) / relative).convert("L")
    for image, kind, planes in ((gray, "PNG", own), (gray.resize((2048, 2048), Image.BICUBIC), "JPEG", upscaled)):
        buffer = io.BytesIO()
        image.save(buffer, format=kind, quality=95)
        planes.append(decode_for_model(buffer.getvalue(), *size))
labels = (validation.label.to_numpy() == predictor.positive_index).astype(int)
for sigma in args.sigmas:
    preprocessing = replace(predictor.preprocessing, smoothing=sigma)

    def probabilities(planes):
        inputs = np.stack([preprocessing.model_input(plane, *size) for plane in planes])
        return np.concatenate([predictor.probabilities(inputs[i:i + 64])[:, predictor.positive_index]
                               for i in range(0, len(inputs), 64)])

    before, after = probabilities(own), probabilities(upscaled)
    moves = np.abs(after - before)
    near = np.abs(logit(before) - logit(predictor.threshold)) < 1.0
    print(f"sigma {sigma}: ROC-AUC {roc_auc_score(labels, before):.4f}, upscale moves past 0.02: "
          f"{(moves > 0.02).mean():.3f} (largest {moves.max():.3f}; median near the threshold "
          f"{np.median(moves[near]) if near.any() else float('nan'):.4f} of {near.sum()})", flush=True)
