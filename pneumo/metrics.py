"""Metrics as pure functions of arrays (scikit-learn underneath). Plots and reports read these numbers."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def expected_calibration_error(y_true, prob_positive, n_bins: int = 15) -> float:
    """ECE of the positive-class probability: the bin-weighted gap between the predicted probability
    and the observed fraction of positives, over `n_bins` equal-width probability bins."""
    y_true = np.asarray(y_true, dtype=float)
    prob_positive = np.asarray(prob_positive, dtype=float)
    bins = np.minimum((prob_positive * n_bins).astype(int), n_bins - 1)
    error = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            error += in_bin.mean() * abs(prob_positive[in_bin].mean() - y_true[in_bin].mean())
    return float(error)


def compute_metrics(y_true, prob_positive, threshold: float = 0.5) -> dict:
    """Binary metrics for PNEUMONIA (label 1) against NORMAL (label 0) at `threshold`.

    The confusion matrix is [[TN, FP], [FN, TP]] (rows: true NORMAL, PNEUMONIA).
    """
    y_true = np.asarray(y_true, dtype=int)
    prob_positive = np.asarray(prob_positive, dtype=float)
    y_pred = (prob_positive >= threshold).astype(int)
    (tn, fp), (fn, tp) = skm.confusion_matrix(y_true, y_pred, labels=[0, 1])
    both_classes = len(np.unique(y_true)) == 2
    return {
        "n_images": int(len(y_true)),
        "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else None,
        "specificity": float(tn / (tn + fp)) if tn + fp else None,
        "precision": float(tp / (tp + fp)) if tp + fp else None,
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y_true, prob_positive)) if both_classes else None,
        "expected_calibration_error": expected_calibration_error(y_true, prob_positive),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }
