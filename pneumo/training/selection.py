"""The selection criterion training chooses checkpoints on, and export and ensembles record: the clean
validation split, the same images under one strong acquisition perturbation each, and the
earliest-acquisitions hold-out, each at the threshold that reaches sensitivity 0.95 on the clean split."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..prediction.calibration import threshold_for_sensitivity
from .perturbations import SUITE, perturb

# The per-epoch criterion sees each validation image once, under one strong perturbation.
STRONG = [p for p in SUITE if p.strength == "strong"]
CRITERION = {
    "name": "worst_balanced_accuracy_at_95_sensitivity",
    "description": "the threshold that reaches sensitivity 0.95 on the clean validation split, then the lowest "
                   "balanced accuracy ((sensitivity + specificity) / 2) at that threshold over three sets: the "
                   "clean validation split, the validation split with one strong acquisition perturbation per "
                   "image (seeded), and the earliest-acquisitions hold-out",
}


def prepared_inputs(grays, preprocessing, size: int, perturbation_of=None) -> np.ndarray:
    """Model inputs for decoded planes; `perturbation_of(i)` names the perturbation of image i, if any."""
    def one(index):
        gray = grays[index]
        if perturbation_of is not None:
            gray = perturb(gray, perturbation_of(index), seed=index)
        return preprocessing.model_input(gray, size, size)

    with ThreadPoolExecutor() as pool:
        return np.stack(list(pool.map(one, range(len(grays)))))


def balanced_accuracy(labels, prob_positive, threshold: float) -> float:
    labels = np.asarray(labels, dtype=int)
    predicted = np.asarray(prob_positive) >= threshold
    return float((predicted[labels == 1].mean() + (~predicted[labels == 0]).mean()) / 2)


def selection_scores(clean: tuple, perturbed: tuple, holdout: tuple | None) -> dict:
    """The criterion (see CRITERION) from (labels, P(positive)) of each set, with its parts."""
    from sklearn.metrics import roc_auc_score

    threshold = threshold_for_sensitivity(*clean, 0.95)
    sets = {"clean": clean, "perturbed": perturbed, **({"holdout": holdout} if holdout else {})}
    scores = {f"{name}_auc": float(roc_auc_score(*values)) for name, values in sets.items()}
    scores.update({f"{name}_balanced_accuracy": balanced_accuracy(*values, threshold) for name, values in sets.items()})
    scores["criterion"] = min(scores[f"{name}_balanced_accuracy"] for name in sets)
    return scores
