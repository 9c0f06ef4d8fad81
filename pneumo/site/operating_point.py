"""A site's own operating point, fitted without labels from the site's own scores (pure functions of arrays).

At a new hospital the pneumonia X-rays still score high and narrow, and the normal ones spread over the whole
range: it is the normal class that moves. So the model's scores at the site (z, the calibrated log-odds of
P(pneumonia)) are read as a two-component mixture

    p(z) = prior * f_pneumonia(z) + (1 - prior) * f_normal((z - shift) / scale) / scale

where both shapes are validation's own (`SiteReference`: kernel densities of its two classes' scores, which
are far from Gaussian: the pneumonia scores pile up under the ceiling that label smoothing leaves and trail a
long tail below it). The pneumonia shape stays as validation measured it; the normal shape may move and widen
(`shift`, `scale`); the prior is the site's prevalence. All three are fitted by maximum likelihood on the
site's unlabeled scores. From the fit:
- the probability shown at the site is the mixture's posterior (`ProbabilityMap`), calibrated at the site and
  kept non-decreasing in z;
- the threshold is the source's Youden operating point re-found on the fitted classes (where sensitivity +
  specificity - 1 is largest), raised no further than the score that keeps an estimated sensitivity of
  `MIN_SENSITIVITY` on validation's pneumonia shape, and never below the source's threshold (a site's normals
  that did not move give no reason to call more children ill): where the source's threshold is already above
  that score, it stays;
- the estimated prevalence is the prior, with a bootstrap interval.

`check_fit` is the guard: a fit that cannot be trusted (too few images, a degenerate component, classes not
separated, an implausible or unpinned prevalence, a mixture that does not describe the scores) is refused with
its reasons, and the caller keeps the operating point it had. `batch_norm_allowed` guards the batch-norm step:
its statistics describe the site's case mix as much as its machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logsumexp, ndtr

from ..prediction.calibration import ProbabilityMap

METHOD = ("two-class mixture of the site's calibrated log-odds, fitted without labels by maximum likelihood: "
          "validation's pneumonia shape as it is, validation's normal shape shifted and widened, and the prior; "
          "the probability is the mixture's posterior, the threshold the source's Youden operating point re-found "
          "on the fitted classes, raised no further than an estimated sensitivity of 0.93 and never below "
          "the source's threshold")
MIN_SENSITIVITY = 0.93  # on validation's pneumonia shape, at the threshold: at least this
QUANTILES = 81  # the points that keep a class's shape in pneumo.json
MIN_IMAGES = 100
# The guard's limits (check_fit): each names what it protects against.
MIN_COMPONENT_IMAGES = 10  # fewer of the site's images in a class: degenerate
SCALE_RANGE = (0.25, 8.0)  # the normal shape narrowed or widened past these: degenerate
MIN_SEPARATION_AUC = 0.80  # the ROC-AUC the fitted classes imply: below it they are not separated
PREVALENCE_RANGE = (0.02, 0.98)
MAX_INTERVAL_WIDTH = 0.35  # the prevalence's 95% interval wider than this: the scores do not pin it down
# The Kolmogorov-Smirnov distance between the fitted mixture and the site's scores, at most. Not a test at the 1%
# level: the pneumonia scores pile up under a ceiling, so a shift of 0.1 there moves the distance by 0.2 while the
# fit stays good (the earliest-acquisitions hold-out: 0.17, prevalence 0.80 estimated for 0.81).
MAX_MISFIT = 0.25
# Batch-norm statistics re-estimated on a case mix this far from validation's describe the mix, not the machine
# (docs/experiments/site_operating_point.py: at a 10% site, AdaBN costs the stand-ins 0.2-0.4 of specificity).
MAX_MIX_DIFFERENCE = 0.2
# The case mix that the released network's fit estimated can itself be off at a shifted site (on the official test
# set, normals that moved up read as pneumonia), so the step is checked again after it: statistics that took up the
# site's case mix make its X-rays look like validation's mix, and the adapted fit's prevalence moves toward
# validation's. On the stand-ins (docs/experiments/site_operating_point.py, `adabn_mix_check`) it moved that way by
# 0.09-0.58 wherever AdaBN cost specificity at a 10% or 25% site, and by at most 0.06 where AdaBN was harmless.
MAX_MIX_PULL = 0.075
BOOTSTRAP = 100
BIN = 0.02  # the resolution in z at which the site's scores are fitted
GRID = np.linspace(-30.0, 30.0, 241)  # z where the probability map is kept (every 0.25)


@dataclass(frozen=True)
class ClassShape:
    """One class's scores as a kernel density: equal-mass points (quantiles) and a bandwidth."""
    points: tuple[float, ...]
    bandwidth: float

    @classmethod
    def of(cls, z) -> "ClassShape":
        z = np.asarray(z, dtype=np.float64)
        spread = min(np.std(z), (np.percentile(z, 75) - np.percentile(z, 25)) / 1.34) or np.std(z) or 1.0
        bandwidth = max(0.9 * spread * len(z) ** -0.2, 0.05)
        return cls(tuple(float(q) for q in np.quantile(z, np.linspace(0, 1, QUANTILES))), float(bandwidth))

    def moved(self, shift: float, scale: float) -> "ClassShape":
        return ClassShape(tuple(shift + scale * p for p in self.points), self.bandwidth * scale)

    def log_density(self, z) -> np.ndarray:
        points = np.asarray(self.points)
        distance = (np.asarray(z, dtype=np.float64)[..., None] - points) / self.bandwidth
        return (logsumexp(-0.5 * distance ** 2, axis=-1) - np.log(len(points)) - np.log(self.bandwidth)
                - 0.5 * np.log(2 * np.pi))

    def cdf(self, z) -> np.ndarray:
        distance = (np.asarray(z, dtype=np.float64)[..., None] - np.asarray(self.points)) / self.bandwidth
        return ndtr(distance).mean(axis=-1)

    def quantile(self, share: float) -> float:
        grid = np.linspace(self.points[0] - 4 * self.bandwidth, self.points[-1] + 4 * self.bandwidth, 4001)
        return float(np.interp(share, self.cdf(grid), grid))

    def to_config(self) -> dict:
        return {"points": [round(p, 5) for p in self.points], "bandwidth": self.bandwidth}

    @classmethod
    def from_config(cls, block: dict) -> "ClassShape":
        return cls(tuple(float(p) for p in block["points"]), float(block["bandwidth"]))


@dataclass(frozen=True)
class SiteReference:
    """What validation says the classes look like, for one network state (as released, or batch-norm adapted)."""
    positive: ClassShape
    negative: ClassShape
    prevalence: float
    images: int

    @classmethod
    def from_scores(cls, z, positives) -> "SiteReference":
        z, positives = np.asarray(z, dtype=np.float64), np.asarray(positives, dtype=bool)
        return cls(ClassShape.of(z[positives]), ClassShape.of(z[~positives]), float(positives.mean()), len(z))

    def to_config(self) -> dict:
        return {"positive": self.positive.to_config(), "negative": self.negative.to_config(),
                "prevalence": self.prevalence, "images": self.images}

    @classmethod
    def from_config(cls, block: dict) -> "SiteReference":
        return cls(ClassShape.from_config(block["positive"]), ClassShape.from_config(block["negative"]),
                   float(block["prevalence"]), int(block["images"]))


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float
    limit: str
    why: str  # what a failure means, in words


@dataclass
class SiteFit:
    """A fitted site operating point and the guard's verdict on it."""
    prior: float
    shift: float
    scale: float
    positive: ClassShape
    negative: ClassShape  # validation's normal shape, moved to the site
    probability_map: ProbabilityMap
    threshold_log_odds: float  # on the source's calibrated log-odds z
    prevalence_interval: tuple[float, float]
    images: int
    checks: list[Check] = field(default_factory=list)

    @property
    def prevalence(self) -> float:
        return self.prior

    @property
    def threshold(self) -> float:
        """The threshold on the site's probability (the map's output at the threshold's z)."""
        return float(self.probability_map.probabilities(self.threshold_log_odds))

    @property
    def estimated_sensitivity(self) -> float:
        return float(1 - self.positive.cdf(self.threshold_log_odds))

    @property
    def estimated_specificity(self) -> float:
        return float(self.negative.cdf(self.threshold_log_odds))

    @property
    def trusted(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def reason(self) -> str | None:
        """Why the fit is not trusted, in one phrase; None when it is."""
        failed = [check.why for check in self.checks if not check.passed]
        return "; ".join(failed) if failed else None

    def to_config(self) -> dict:
        return {"method": METHOD, "prevalence": round(self.prevalence, 4),
                "prevalence_interval": [round(v, 4) for v in self.prevalence_interval],
                "threshold": self.threshold, "threshold_log_odds": self.threshold_log_odds,
                "estimated_sensitivity": round(self.estimated_sensitivity, 4),
                "estimated_specificity": round(self.estimated_specificity, 4),
                "normal_class_moved": {"shift": round(self.shift, 4), "scale": round(self.scale, 4)},
                "probability_map": self.probability_map.to_config(), "image_count": self.images,
                "checks": [asdict(check) for check in self.checks],
                "verdict": "trusted" if self.trusted else "refused", "reason": self.reason}


def binned(z) -> tuple[np.ndarray, np.ndarray]:
    """The scores as (bin centres, counts) at BIN in z: far finer than any class shape's bandwidth, and a fit
    and a bootstrap then cost the number of occupied bins, not of images."""
    centres, counts = np.unique(np.round(np.asarray(z, dtype=np.float64) / BIN), return_counts=True)
    return centres * BIN, counts.astype(np.float64)


def fit_mixture(centres, counts, reference: SiteReference, starts=(0.2, 0.5, 0.8)) -> tuple[float, float, float]:
    """(prior, shift, scale) of the mixture of the module's docstring, by maximum likelihood on binned scores."""
    log_positive = reference.positive.log_density(centres)
    weights = counts / counts.sum()
    negative = reference.negative

    def negative_log_likelihood(parameters):
        prior_logit, shift, log_scale = parameters
        log_negative = negative.log_density((centres - shift) / np.exp(log_scale)) - log_scale
        mixed = np.logaddexp(-np.logaddexp(0, -prior_logit) + log_positive,
                             -np.logaddexp(0, prior_logit) + log_negative)
        return -weights @ mixed

    bounds = [(-8.0, 8.0), (-40.0, 40.0), (np.log(0.05), np.log(20.0))]
    best = min((minimize(negative_log_likelihood, start, method="L-BFGS-B", bounds=bounds)
                for start in [[np.log(p / (1 - p)), 0.0, 0.0] if np.isscalar(p) else p for p in starts]),
               key=lambda result: result.fun)
    prior_logit, shift, log_scale = best.x
    return float(expit(prior_logit)), float(shift), float(np.exp(log_scale))


def site_threshold(positive: ClassShape, negative: ClassShape, source_threshold: float,
                   min_sensitivity: float = MIN_SENSITIVITY) -> float:
    """The threshold on z (see the module's docstring): Youden's on the fitted classes, kept between the source's
    threshold and the score that keeps `min_sensitivity` of validation's pneumonia shape."""
    grid = np.linspace(min(negative.points[0], positive.points[0]) - 1, max(positive.points[-1], 0) + 1, 2001)
    youden = grid[int(np.argmax(negative.cdf(grid) - positive.cdf(grid)))]
    keeps_sensitivity = positive.quantile(1 - min_sensitivity)
    return float(max(source_threshold, min(youden, keeps_sensitivity)))


def probability_map(prior: float, positive: ClassShape, negative: ClassShape) -> ProbabilityMap:
    """The mixture's posterior as a ProbabilityMap, weighted on the grid by the mixture's own density."""
    log_positive, log_negative = positive.log_density(GRID), negative.log_density(GRID)
    density = prior * np.exp(log_positive) + (1 - prior) * np.exp(log_negative)
    return ProbabilityMap.of_log_odds(GRID, np.log(prior) - np.log1p(-prior) + log_positive - log_negative, density)


def misfit(z, prior: float, positive: ClassShape, negative: ClassShape) -> float:
    """Kolmogorov-Smirnov distance between the site's scores and the fitted mixture."""
    z = np.sort(np.asarray(z, dtype=np.float64))
    model = prior * positive.cdf(z) + (1 - prior) * negative.cdf(z)
    n = len(z)
    return float(max(np.max(np.arange(1, n + 1) / n - model), np.max(model - np.arange(n) / n)))


def fit_site(z, reference: SiteReference, source_threshold: float, seed: int = 0,
             bootstrap: int = BOOTSTRAP) -> SiteFit:
    """The site operating point from the site's scores `z` (calibrated log-odds of the network that will score
    the site), with the guard's checks. `reference`: validation's classes for the same network state;
    `source_threshold`: the operating point the folder has now, on z."""
    z = np.asarray(z, dtype=np.float64)
    z = z[np.isfinite(z)]
    if len(z) < 2:
        raise ValueError("a site operating point needs scores")
    centres, counts = binned(z)
    prior, shift, scale = fit_mixture(centres, counts, reference)
    negative = reference.negative.moved(shift, scale)
    rng = np.random.default_rng(seed)
    start = [np.log(prior / (1 - prior)), shift, np.log(scale)]
    priors = [fit_mixture(centres, rng.multinomial(len(z), counts / counts.sum()), reference, [start])[0]
              for _ in range(bootstrap)]
    interval = (float(np.percentile(priors, 2.5)), float(np.percentile(priors, 97.5))) if priors else (prior, prior)
    fit = SiteFit(prior, shift, scale, reference.positive, negative,
                  probability_map(prior, reference.positive, negative),
                  site_threshold(reference.positive, negative, source_threshold), interval, len(z))
    fit.checks = check_fit(fit, z)
    return fit


def check_fit(fit: SiteFit, z) -> list[Check]:
    """The guard: every reason to distrust `fit` of the scores `z`, each as a Check."""
    n = len(z)
    grid = np.linspace(-30, 30, 3001)
    negative_cdf = fit.negative.cdf(grid)
    separation = float(np.sum(np.diff(negative_cdf) * (1 - fit.positive.cdf(grid[1:]))))  # P(pneumonia scores higher)
    smallest = min(fit.prior, 1 - fit.prior) * n
    low, high = PREVALENCE_RANGE
    distance = misfit(z, fit.prior, fit.positive, fit.negative)
    width = fit.prevalence_interval[1] - fit.prevalence_interval[0]
    median_gap = fit.positive.quantile(0.5) - fit.negative.quantile(0.5)
    return [
        Check("enough_images", n >= MIN_IMAGES, n, f">= {MIN_IMAGES}",
              f"{n} readable X-rays (a site operating point needs at least {MIN_IMAGES})"),
        Check("class_size", smallest >= MIN_COMPONENT_IMAGES, round(smallest, 1), f">= {MIN_COMPONENT_IMAGES} images",
              f"a degenerate fit: one class holds about {smallest:.0f} of the {n} X-rays"),
        Check("normal_scale", SCALE_RANGE[0] <= fit.scale <= SCALE_RANGE[1], round(fit.scale, 3),
              f"{SCALE_RANGE[0]}-{SCALE_RANGE[1]} x validation's spread",
              f"a degenerate fit: the normal class would be {fit.scale:.2f} x as wide as on validation"),
        Check("separation", separation >= MIN_SEPARATION_AUC, round(separation, 3), f"ROC-AUC >= {MIN_SEPARATION_AUC}",
              f"the fitted classes are not separated (they imply a ROC-AUC of {separation:.2f})"),
        Check("normal_below_pneumonia", median_gap > 0, round(median_gap, 3), "> 0",
              "the class fitted as normal scores above the pneumonia one"),
        Check("prevalence", low <= fit.prior <= high, round(fit.prior, 3), f"{low}-{high}",
              f"an implausible estimated prevalence ({fit.prior:.2f})"),
        Check("prevalence_interval", width <= MAX_INTERVAL_WIDTH, round(width, 3), f"width <= {MAX_INTERVAL_WIDTH}",
              "the scores do not pin the prevalence down (its 95% interval is "
              f"{fit.prevalence_interval[0]:.2f}-{fit.prevalence_interval[1]:.2f})"),
        Check("mixture_fits", distance <= MAX_MISFIT, round(distance, 3), f"KS distance <= {MAX_MISFIT}",
              f"validation's class shapes do not describe the site's scores (KS distance {distance:.2f})"),
    ]


def batch_norm_allowed(fit: SiteFit, reference: SiteReference) -> str | None:
    """Why the batch-norm step is not to be taken at a site whose released network's scores gave `fit`, or None."""
    if not fit.trusted:
        return f"the site's case mix could not be estimated ({fit.reason})"
    if abs(fit.prevalence - reference.prevalence) > MAX_MIX_DIFFERENCE:
        return (f"the site's estimated prevalence ({fit.prevalence:.2f}) is too far from validation's "
                f"({reference.prevalence:.2f}) for batch-norm statistics to describe the machine rather than the mix")
    return None


def batch_norm_kept(released: SiteFit, adapted: SiteFit, reference: SiteReference) -> str | None:
    """Why the batch-norm step is undone, when the fit after it (`adapted`) moved the estimated prevalence toward
    validation's (`reference.prevalence`) by more than MAX_MIX_PULL from the released network's fit (`released`): the
    statistics then describe the site's case mix rather than its machine. None when the step stands."""
    pull = adapted.prevalence - released.prevalence
    toward = np.sign(pull) == np.sign(reference.prevalence - released.prevalence)
    if toward and abs(pull) > MAX_MIX_PULL:
        return (f"after it, the estimated prevalence moved from {released.prevalence:.2f} to {adapted.prevalence:.2f}, "
                f"toward validation's {reference.prevalence:.2f}: the statistics took up the site's case mix")
    return None


def thinned_to(positives, prevalence: float, seed: int = 0) -> np.ndarray:
    """Row indices of a subset whose positives are subsampled (or, above the folder's own prevalence, whose
    negatives are) so that positives make `prevalence` of it: a stand-in site of that case mix."""
    positives = np.asarray(positives, dtype=bool)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(positives), np.flatnonzero(~positives)
    if prevalence <= positives.mean():
        keep = int(round(prevalence * len(neg) / (1 - prevalence)))
        pos = rng.choice(pos, min(keep, len(pos)), replace=False)
    else:
        keep = int(round((1 - prevalence) * len(pos) / prevalence))
        neg = rng.choice(neg, min(keep, len(neg)), replace=False)
    return np.sort(np.concatenate([pos, neg]))
