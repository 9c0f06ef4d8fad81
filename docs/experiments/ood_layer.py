"""Which layer should a model's out-of-distribution check measure? For each candidate layer, fit the check as
pneumo.prediction.ood does (2,000 training images, threshold at the validation split's 99th percentile) and print the
scores of the six non-X-rays of tests/ood_probes.py and the fraction of the hold-out X-rays flagged.
Chosen on training, validation and hold-out images only: the official test set is not read.

    PYTHONPATH=. python docs/experiments/ood_layer.py models/mobilenet-v2 out_relu,block_13_expand_relu
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pneumo.hub import model_folder
from pneumo.prediction.ood import FeatureReference, TRAINING_SAMPLE, features_of
from pneumo.prediction.predictor import Predictor
from ood_probes import not_chest_xrays

ROOT = Path("../shared/data/chest_xray")
folder, layers = Path(sys.argv[1]), sys.argv[2].split(",")
predictor = Predictor.from_folder(folder)


def features(sources) -> list[np.ndarray]:
    """Every candidate layer's features of image files or bytes, one array per layer."""
    return features_of(predictor.model, layers, list(sources), predictor.height, predictor.width,
                       predictor.preprocessing)


def of_files(paths) -> list[np.ndarray]:
    return features(str(ROOT / path) for path in paths)


split = pd.read_csv(folder / model_folder.SPLIT_FILE)
training = split[split.split == model_folder.TRAIN_SPLIT].sample(TRAINING_SAMPLE, random_state=0)
validation = split[split.split == model_folder.VALIDATION_SPLIT]
holdout = split[split.split == model_folder.HOLDOUT_SPLIT]
pictures = not_chest_xrays()
others = features(pictures.values())
for layer, train_f, val_f, hold_f, other_f in zip(layers, of_files(training.path), of_files(validation.path),
                                                  of_files(holdout.path), others):
    reference = FeatureReference.fit(train_f, val_f)
    scores = dict(zip(pictures, reference.scores(other_f).round(2)))
    print(f"{layer} ({train_f.shape[1]} features): hold-out flagged {(reference.scores(hold_f) > 1).mean():.3f}, "
          f"non-X-rays {scores}", flush=True)
