"""Fitted on the validation split only: the softmax temperature and the decision threshold."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.metrics import roc_curve


def calibrated_probabilities(logits, temperature: float = 1.0) -> np.ndarray:
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1)


def fit_temperature(logits, labels) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)

    def nll(log_t):
        return -log_softmax(logits / np.exp(log_t), axis=-1)[np.arange(len(labels)), labels].mean()

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def choose_threshold(labels, prob_positive) -> float:
    """The threshold on P(PNEUMONIA) that maximises Youden's J (sensitivity + specificity - 1).

    Weighs both error types equally, independent of the 1:3 class imbalance of the training data.
    """
    fpr, tpr, thresholds = roc_curve(np.asarray(labels, dtype=int), np.asarray(prob_positive, dtype=float))
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def threshold_for_sensitivity(labels, prob_positive, sensitivity: float = 0.95) -> float:
    """The highest threshold on P(positive) whose sensitivity on these labels is at least `sensitivity`.

    The screening operating point: it misses at most 1 - `sensitivity` of the positives here and, among
    the thresholds that do, calls the fewest negatives positive.
    """
    fpr, tpr, thresholds = roc_curve(np.asarray(labels, dtype=int), np.asarray(prob_positive, dtype=float))
    reaching = np.flatnonzero(tpr >= sensitivity)
    return float(min(thresholds[reaching[0]], 1.0))
