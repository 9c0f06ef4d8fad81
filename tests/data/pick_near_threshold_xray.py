"""Pick tests/data/near_threshold_xray.jpeg (run after retraining a bundled model; never reads the test set).

The validation-split X-ray nearest every bundled model's threshold: the smallest largest distance, over
the models, between its logit-probability and the threshold's. A saturated image would pass the encoding
tests whatever the decoder did; one near the threshold shows any difference.
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pneumo.hub import model_folder  # noqa: E402
from pneumo.hub.bundled import BUNDLED_MODELS  # noqa: E402
from pneumo.prediction.predictor import Predictor  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "chest_xray"


def logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


folders = [folder for _, folder in BUNDLED_MODELS.values()]
split = pd.read_csv(folders[0] / "data_split.csv")
validation = split[split.split == model_folder.VALIDATION_SPLIT].path.tolist()
distances = []
for folder in folders:
    predictor = Predictor.from_folder(folder)
    probabilities = np.concatenate([
        predictor.probabilities(np.stack([predictor.load_image(DATA / p) for p in validation[i:i + 32]]))
        [:, predictor.positive_index] for i in range(0, len(validation), 32)])
    distances.append(np.abs(logit(probabilities) - logit(predictor.threshold)))
    print(f"{predictor.name}: threshold {predictor.threshold:.3f}")
chosen = int(np.argmax(-np.max(distances, axis=0)))
print(f"chosen: {validation[chosen]} (largest logit distance to a threshold {np.max(distances, axis=0)[chosen]:.3f})")
shutil.copy(DATA / validation[chosen], Path(__file__).parent / "near_threshold_xray.jpeg")
