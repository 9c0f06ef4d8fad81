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


def compute_metrics(y_true, prob_positive, threshold=0.5) -> dict:
    """Binary metrics for PNEUMONIA (label 1) against NORMAL (label 0) at `threshold` (one for all, or one per
    image: cross-fitted halves each decide at their own; `threshold` is then recorded as None).

    The confusion matrix is [[TN, FP], [FN, TP]] (rows: true NORMAL, PNEUMONIA).
    """
    y_true = np.asarray(y_true, dtype=int)
    prob_positive = np.asarray(prob_positive, dtype=float)
    y_pred = (prob_positive >= np.asarray(threshold, dtype=float)).astype(int)
    (tn, fp), (fn, tp) = skm.confusion_matrix(y_true, y_pred, labels=[0, 1])
    both_classes = len(np.unique(y_true)) == 2
    return {
        "n_images": len(y_true),
        "threshold": float(threshold) if np.ndim(threshold) == 0 else None,
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else None,
        "specificity": float(tn / (tn + fp)) if tn + fp else None,
        "precision": float(tp / (tp + fp)) if tp + fp else None,
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y_true, prob_positive)) if both_classes else None,
        "expected_calibration_error": expected_calibration_error(y_true, prob_positive),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


def bootstrap_intervals(y_true, prob_positive, threshold, resamples: int = 1000, seed: int = 0,
                        level: float = 0.95) -> dict:
    """Percentile-bootstrap confidence intervals (images resampled with replacement) for accuracy,
    sensitivity, specificity, precision, F1 and ROC-AUC at `threshold` (one, or one per image): {metric: [low,
    high]}."""
    y_true = np.asarray(y_true, dtype=int)
    prob_positive = np.asarray(prob_positive, dtype=float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(y_true), size=(resamples, len(y_true)))
    # int8 labels: the (resamples, images) matrices stay small for a folder of 20,000 images
    truth, predicted = y_true.astype(np.int8)[draws], (prob_positive >= threshold)[draws]
    positives = (truth == 1).sum(axis=1)
    true_positives = (predicted & (truth == 1)).sum(axis=1)
    false_positives = (predicted & (truth == 0)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {
            "accuracy": (truth == predicted).mean(axis=1),
            "sensitivity": true_positives / positives,
            "specificity": (~predicted & (truth == 0)).sum(axis=1) / (truth == 0).sum(axis=1),
            "precision": true_positives / (true_positives + false_positives),
            "f1": 2 * true_positives / (true_positives + false_positives + positives),  # 2TP / (2TP + FP + FN)
        }
    aucs = [skm.roc_auc_score(truth[i], prob_positive[draws[i]]) for i in range(resamples)
            if 0 < truth[i].sum() < len(y_true)]
    values["roc_auc"] = np.array(aucs)
    tail = (1 - level) / 2 * 100
    return {name: [float(np.nanpercentile(v, tail)), float(np.nanpercentile(v, 100 - tail))]
            for name, v in values.items() if np.isfinite(v).any()}


def subgroup_metrics(y_true, prob_positive, threshold: float, subgroups) -> dict:
    """Per subgroup (e.g. bacterial / viral pneumonia, one acquisition series of normals): its size, the
    fraction classified correctly at `threshold`, and the ROC-AUC of the subgroup against every image
    of the other class."""
    y_true = np.asarray(y_true, dtype=int)
    prob_positive = np.asarray(prob_positive, dtype=float)
    subgroups = np.asarray(subgroups, dtype=object)
    found = {}
    for name in sorted(set(subgroups)):
        members = subgroups == name
        correct = (prob_positive[members] >= threshold) == (y_true[members] == 1)
        entry = {"n_images": int(members.sum()), "accuracy": float(correct.mean())}
        classes = set(y_true[members])
        if len(classes) == 1:
            others = y_true != y_true[members][0]
            if others.any():
                compared = members | others
                entry["roc_auc_vs_other_class"] = float(skm.roc_auc_score(y_true[compared], prob_positive[compared]))
        found[name] = entry
    return found


def full_metrics(y_true, prob_positive, threshold: float, subgroups=None) -> dict:
    """`compute_metrics`, with 95% bootstrap intervals and, given each image's subgroup, per-subgroup metrics."""
    metrics = compute_metrics(y_true, prob_positive, threshold)
    if len(np.unique(np.asarray(y_true))) == 2:
        metrics["confidence_intervals_95"] = bootstrap_intervals(y_true, prob_positive, threshold)
    if subgroups is not None:
        metrics["subgroups"] = subgroup_metrics(y_true, prob_positive, threshold, subgroups)
    return metrics


HEADLINE_KEYS = ("accuracy", "sensitivity", "specificity", "roc_auc", "expected_calibration_error")


def summary_line(metrics: dict, keys=HEADLINE_KEYS) -> str:
    """One line of `metrics` for a terminal: each key to 3 decimals, with its 95% interval where there is one."""
    intervals = metrics.get("confidence_intervals_95", {})
    return ", ".join(f"{key} {metrics[key]:.3f}" + (f" ({intervals[key][0]:.3f}-{intervals[key][1]:.3f})"
                                                     if key in intervals else "")
                     for key in keys if key in metrics)
