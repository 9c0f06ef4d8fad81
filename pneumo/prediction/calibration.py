"""Fitted on the validation split only: the calibration (temperature and class bias) and the decision threshold;
and a site's probability map after it, fitted without labels at a site (pneumo.site.operating_point)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, log_softmax, softmax
from sklearn.metrics import roc_curve


@dataclass(frozen=True)
class Calibration:
    """Probabilities = softmax(logits / temperature + bias).

    The temperature alone fixes over- or under-confidence; the per-class bias (Platt scaling's second
    parameter, for two classes) also fixes a model whose scores lean towards one class, which the
    temperature cannot. Evidence, the pneumo 0.2 ResNet50 fitted on its validation split: expected calibration
    error 0.090 with the temperature alone (the Youden threshold sat at P = 0.92) and 0.028 with the bias; on
    the earliest-acquisitions hold-out, which neither fit saw, 0.067 and 0.018 (negative log-likelihood 0.141
    and 0.078). Folders without a bias (pneumo 0.1's) read as bias 0.
    """

    temperature: float = 1.0
    bias: tuple[float, ...] | None = None

    def probabilities(self, logits) -> np.ndarray:
        scaled = np.asarray(logits, dtype=np.float64) / self.temperature
        if self.bias is not None:
            scaled = scaled + np.asarray(self.bias, dtype=np.float64)
        return softmax(scaled, axis=-1)

    @classmethod
    def from_config(cls, block: dict | None) -> "Calibration":
        block = block or {}
        bias = block.get("bias")
        return cls(float(block.get("temperature", 1.0)), tuple(float(b) for b in bias) if bias else None)

    def to_config(self, fitted_on: str) -> dict:
        if self.bias is None:
            return {"method": "temperature scaling", "temperature": self.temperature, "fitted_on": fitted_on}
        return {"method": "temperature scaling with a class bias", "temperature": self.temperature,
                "bias": list(self.bias), "fitted_on": fitted_on}

    def describe(self) -> str:
        if self.bias is None:
            return f"softmax(logits / T) with T = {self.temperature:.3f}"
        return (f"softmax(logits / T + b) with T = {self.temperature:.3f} and "
                f"b = ({', '.join(f'{b:.3f}' for b in self.bias)})")


def fit_calibration(logits, labels) -> Calibration:
    """The temperature and class bias minimising the negative log-likelihood of the labels.

    The first class's bias stays 0 (only differences between classes matter). Started from the
    temperature-only fit, so the result is never worse than it on these labels.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    rows = np.arange(len(labels))

    def nll(parameters):
        bias = np.concatenate([[0.0], parameters[1:]])
        return -log_softmax(logits / np.exp(parameters[0]) + bias, axis=-1)[rows, labels].mean()

    start = np.concatenate([[np.log(fit_temperature(logits, labels))], np.zeros(logits.shape[1] - 1)])
    result = minimize(nll, start, method="L-BFGS-B",
                      bounds=[(np.log(0.05), np.log(20.0))] + [(-20.0, 20.0)] * (logits.shape[1] - 1))
    parameters = result.x if result.fun <= nll(start) else start
    return Calibration(float(np.exp(parameters[0])), (0.0, *map(float, parameters[1:])))


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


def log_odds_of(probabilities) -> np.ndarray:
    """The calibrated log-odds z of P(positive)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class ProbabilityMap:
    """A site's P(positive) from the source's calibrated log-odds z (pneumo.site.operating_point fits it: the
    posterior of a mixture of the site's scores), kept as log-odds on a grid of z, made non-decreasing (isotonic:
    where a fitted normal shape's tail outweighs the pneumonia one's far above both, a very confident pneumonia
    would otherwise turn back to normal), interpolated between and constant beyond."""
    grid: tuple[float, ...]
    log_odds_at: tuple[float, ...]

    @classmethod
    def of_log_odds(cls, grid, log_odds, weights=None) -> "ProbabilityMap":
        """The non-decreasing map closest to (grid, log_odds), each grid point weighted by how many scores lie
        there (`weights`: the far tails, where a ratio of two fitted densities means nothing, weigh almost nothing),
        at the precision pneumo.json keeps."""
        from sklearn.isotonic import IsotonicRegression

        grid = np.asarray(grid, dtype=np.float64)
        weights = np.ones_like(grid) if weights is None else np.asarray(weights, dtype=np.float64) + 1e-9
        rising = IsotonicRegression().fit(grid, np.clip(np.asarray(log_odds, float), -40, 40), sample_weight=weights)
        # Strictly increasing (by 0.001 per unit of z, far below what the fit can tell): on a flat stretch a
        # threshold on the probability would also call every score below its own z, down to the stretch's start.
        strictly = rising.predict(grid) + 1e-3 * (grid - grid[0])
        return cls(tuple(np.round(grid, 4).tolist()), tuple(np.round(strictly, 5).tolist()))

    def log_odds(self, z) -> np.ndarray:
        return np.interp(np.asarray(z, dtype=np.float64), self.grid, self.log_odds_at)

    def probabilities(self, z) -> np.ndarray:
        return expit(self.log_odds(z))

    def to_config(self) -> dict:
        return {"kind": "log-odds, piecewise linear in the source's calibrated log-odds z",
                "z": list(self.grid), "log_odds": list(self.log_odds_at)}

    @classmethod
    def from_config(cls, block: dict) -> "ProbabilityMap":
        return cls(tuple(float(v) for v in block["z"]), tuple(float(v) for v in block["log_odds"]))


class SiteCalibration:
    """A calibration (its `probabilities(logits)`) followed by a site's ProbabilityMap on P(positive)."""

    def __init__(self, calibration, probability_map: ProbabilityMap, positive_index: int):
        self.source, self.probability_map, self.positive_index = calibration, probability_map, positive_index

    def probabilities(self, logits) -> np.ndarray:
        source = self.source.probabilities(logits)
        if source.shape[-1] != 2:
            raise ValueError("a site probability map is fitted for two classes")
        positive = self.probability_map.probabilities(log_odds_of(source[..., self.positive_index]))
        return np.stack([1 - positive, positive] if self.positive_index == 1 else [positive, 1 - positive], axis=-1)

    def describe(self) -> str:
        return f"{self.source.describe()}, then the site's mixture posterior"

    # What a page or a card reads of a calibration: the source's.
    @property
    def temperature(self) -> float:
        return self.source.temperature

    @property
    def bias(self):
        return self.source.bias

    def to_config(self, fitted_on: str) -> dict:
        return self.source.to_config(fitted_on)
