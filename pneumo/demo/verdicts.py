"""What a person reads next to a prediction, in words: the decision with its threshold, the model's measured
limits, whether the models agree, and probabilities at a precision that means something.

The demo page and the PDF report both say it through these functions, so they never say it differently.
Every number about a model comes from its folder's metrics files; none is typed in here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..hub import model_folder
from ..prediction.predictor import NOT_A_CHEST_XRAY

# The split whose metrics describe a model's limits, most telling first: the official test set (scored once),
# a site refit's own hold-out (pneumo.site.refit), else the validation split the threshold was fitted on.
LIMIT_SPLITS = {"test": "the official test set",
                model_folder.SITE_HOLDOUT_SPLIT: "this site's hold-out",
                "validation": "the validation split (the official test set was not scored)"}
# The project's goals on the official test set (docs/results.md); the About tab lists the ones not met.
# The calibration error is the one goal where lower is better.
TEST_SET_TARGETS = {"accuracy": 0.93, "roc_auc": 0.97, "specificity": 0.88, "expected_calibration_error": 0.05}
TARGET_NAMES = {"accuracy": "accuracy", "roc_auc": "ROC-AUC", "specificity": "specificity",
                "expected_calibration_error": "calibration error (ECE)"}
LOWER_IS_BETTER = {"expected_calibration_error"}
# Below this probability the explained class has almost no evidence, and its heatmap is mostly noise.
NEAR_ZERO_PROBABILITY = 0.01
# True of every heatmap method the models use (Grad-CAM, integrated gradients).
HEATMAP_CAVEAT = "The heatmap shows where the model looked, not where the disease is."


def percent(probability: float, decimals: int | None = None) -> str:
    """A probability as a percentage: whole numbers, one decimal near 0 and 1, and never a false certainty
    ('>99.9%' rather than '100%'). `decimals` forces a precision."""
    if decimals is None:
        if probability > 0.999:
            return ">99.9%"
        if probability < 0.001:
            return "<0.1%"
        value = probability * 100
        decimals = 1 if value >= 99.5 or value < 0.5 else 0
    return f"{probability * 100:.{decimals}f}%"


def percent_pair(probability: float, threshold: float) -> tuple[str, str]:
    """Probability and threshold as percentages with enough decimals that their order shows (85.6% < 85.7%)."""
    texts = percent(probability), percent(threshold)
    for decimals in (1, 2, 3):
        if texts[0] != texts[1] or probability == threshold:
            break
        texts = percent(probability, decimals), percent(threshold, decimals)
    return texts


def shown_verdict(result: dict) -> str:
    """What a result tells a person: its verdict (a result recorded before verdicts: its label)."""
    return result.get("verdict", result["label"])


def gives_verdict(result: dict) -> bool:
    """False for an image the model finds unlike its training X-rays: it gets no class (NOT_A_CHEST_XRAY)."""
    return shown_verdict(result) != NOT_A_CHEST_XRAY


def verdict(result: dict) -> str:
    """'PNEUMONIA 85%, below this model's 87% threshold → NORMAL': the decision where its probability is; for an
    image out of distribution, why there is none."""
    if not gives_verdict(result):
        return ("No verdict: this image does not look like the chest X-rays this model was trained on, so its "
                "probabilities mean little (they are in the details).")
    positive = result["positive_class"]
    probability = result["probabilities"][positive]
    shown, threshold = percent_pair(probability, result["threshold"])
    side = "at or above" if probability >= result["threshold"] else "below"
    return f"{positive} {shown}, {side} this model's {threshold} threshold → {result['label']}"


_FRACTION_WORDS = [(1 / 5, "about 1 in 5"), (1 / 4, "about a quarter"), (1 / 3, "about a third"),
                   (2 / 5, "about 2 in 5"), (1 / 2, "about half"), (3 / 5, "about 3 in 5"),
                   (2 / 3, "about two thirds"), (3 / 4, "about three quarters"), (4 / 5, "about 4 in 5"),
                   (9 / 10, "about 9 in 10")]
_ONE_IN = [2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 150, 200, 300, 500, 1000]


def in_words(fraction: float) -> str:
    """A fraction as a person would say it: 'about half', 'about 1 in 200', 'none'."""
    if fraction <= 0:
        return "none"
    if fraction >= 0.97:
        return "almost all" if fraction < 1 else "all"
    if fraction < 0.17:
        one_in = 1 / fraction
        if one_in > 1500:
            return "fewer than 1 in 1,000"
        return f"about 1 in {min(_ONE_IN, key=lambda n: abs(math.log(n / one_in)))}"
    return min(_FRACTION_WORDS, key=lambda pair: abs(pair[0] - fraction))[1]


@dataclass(frozen=True)
class MeasuredLimits:
    """How often a model was wrong on the one split that best describes it, as counts."""
    split: str                # a key of LIMIT_SPLITS
    negative_class: str
    positive_class: str
    negatives: int            # images of the negative class (normal X-rays)
    false_positives: int      # of them, called positive
    positives: int
    false_negatives: int      # positives called negative

    @property
    def where(self) -> str:
        return LIMIT_SPLITS[self.split]

    def false_alarms(self) -> str:
        """'flags about half of normal X-rays as pneumonia (122 of 234)'"""
        return (f"flags {_share(self.false_positives, self.negatives, self.negative_class.lower() + ' X-rays')} as "
                f"{self.positive_class.lower()} ({self.false_positives} of {self.negatives})")

    def misses(self) -> str:
        """'misses about 1 in 200 pneumonia X-rays (2 of 390)'"""
        return (f"misses {_share(self.false_negatives, self.positives, self.positive_class.lower() + ' X-rays')} "
                f"({self.false_negatives} of {self.positives})")

    def sentence(self) -> str:
        return f"Measured on {self.where}, this model {self.false_alarms()} and {self.misses()}."


def _share(count: int, total: int, noun: str) -> str:
    """'about half of normal X-rays', 'about 1 in 200 pneumonia X-rays', 'no normal X-rays'."""
    if not total:
        return f"an unknown share of {noun}"
    words = in_words(count / total)
    if words == "none":
        return f"no {noun}"
    return f"{words} {noun}" if " in " in words or "all" in words else f"{words} of {noun}"


def measured_limits(folder, class_names, positive_class: str) -> MeasuredLimits | None:
    """The model's errors on its most telling split (LIMIT_SPLITS), read from the folder; None if it records none."""
    recorded = model_folder.read_all_metrics(folder)
    split = next((split for split in LIMIT_SPLITS if (recorded.get(split) or {}).get("confusion_matrix")), None)
    if split is None:
        return None
    (true_negatives, false_positives), (false_negatives, true_positives) = recorded[split]["confusion_matrix"]
    negative_class = next((name for name in class_names if name != positive_class), "negative")
    return MeasuredLimits(split, negative_class, positive_class, true_negatives + false_positives, false_positives,
                          true_positives + false_negatives, false_negatives)


def site_sentence(site: dict | None) -> str:
    """Where an adapted model was adapted (an analysis result's `site_adaptation`), in one sentence; '' if not."""
    if not site:
        return ""
    low, high = site["prevalence_interval"]
    fitted = (f"its site operating point estimates {site['estimated_prevalence']:.0%} pneumonia there "
              f"({low:.0%}-{high:.0%}) and decides at {site['threshold']:.0%}"
              if site["operating_point"] == "trusted" else
              f"its site operating point was refused, so it decides at its own threshold ({site['threshold']:.0%})")
    return (f"Adapted without labels to {site['image_count']} X-rays of {site['images']} on {site['date']}"
            f"{' (batch-norm statistics re-estimated)' if site['batch_norm_step'] else ''}; {fitted}.")


def limits_sentence(limits: MeasuredLimits | None) -> str:
    if limits is None:
        return "This model's folder records no measured performance: how often it is wrong is unknown."
    return limits.sentence()


@dataclass(frozen=True)
class Agreement:
    agree: bool
    headline: str
    caveat: str

    def text(self) -> str:
        return f"{self.headline} {self.caveat}"


def agreement(results: dict[str, dict], limits: dict[str, MeasuredLimits | None]) -> Agreement | None:
    """Whether the models agree, and why that alone does not settle it: how often each model's answer was wrong
    where it was measured (false alarms behind a positive answer, misses behind a negative one). None when a
    model gives no verdict (`out_of_distribution_warning` says why): there is nothing to agree on, and no advice
    to have a photo read by a clinician."""
    if not all(gives_verdict(result) for result in results.values()):
        return None
    labels = {result["label"] for result in results.values()}
    errors = _errors_behind(results, limits)
    every = "both" if len(results) == 2 else "all"
    if len(labels) > 1:
        says = "; ".join(f"{name} says {result['label']}" for name, result in results.items())
        return Agreement(False, f"The models disagree on this image ({says}).",
                         f"Treat {every} answers with caution and have the X-ray read by a clinician: {errors}")
    return Agreement(True, f"{every.capitalize()} models agree: {labels.pop()}.",
                     f"Agreement is not confirmation: {errors}")


def _errors_behind(results: dict[str, dict], limits: dict[str, MeasuredLimits | None]) -> str:
    clauses, places = [], []
    for name, result in results.items():
        if limit := limits.get(name):
            wrong = limit.false_alarms() if result["label"] == result["positive_class"] else limit.misses()
            clauses.append((name, wrong, limit.where))
            places.append(limit.where)
    if not clauses:
        return "how often these models are wrong is not recorded."
    if len(set(places)) == 1:
        return f"on {places[0]}, " + "; ".join(f"{name} {wrong}" for name, wrong, _ in clauses) + "."
    return "; ".join(f"{name} {wrong} on {where}" for name, wrong, where in clauses) + "."


def explained_class_warning(result: dict) -> str | None:
    """A warning when the heatmap explains a class the model gives almost no probability."""
    name = result.get("explained_class")
    probability = result["probabilities"].get(name)
    if probability is None or probability >= NEAR_ZERO_PROBABILITY:
        return None
    return (f"This heatmap explains {name}, which the model gives {percent(probability)}: there is almost no "
            "evidence for it, so the colours mean little.")


def targets_not_met(folder) -> list[str]:
    """The project's official-test-set targets this model misses, e.g. 'specificity 0.479 (target 0.88)'."""
    test = model_folder.read_metrics(folder, "test")
    if not test:
        return []
    return [f"{TARGET_NAMES[key]} {test[key]:.3f} (target {target_text(key)})" for key in TEST_SET_TARGETS
            if test.get(key) is not None and not meets_target(key, test[key])]


def meets_target(key: str, value: float) -> bool:
    target = TEST_SET_TARGETS[key]
    return value <= target if key in LOWER_IS_BETTER else value >= target


def target_text(key: str) -> str:
    """'≥ 0.93', or '≤ 0.05' for the calibration error."""
    return f"{'≤' if key in LOWER_IS_BETTER else '≥'} {TEST_SET_TARGETS[key]:.2f}"


def out_of_distribution_warning(results: dict[str, dict]) -> str | None:
    """The warning for an image some model finds unlike its training X-rays (pneumo.prediction.ood), which
    gives it no verdict, else None."""
    flagged = [name for name, result in results.items() if not gives_verdict(result)]
    if not flagged:
        return None
    others = [name for name in results if name not in flagged]
    one = len(flagged) == 1
    text = (f"This image does not look like the chest X-rays {' and '.join(flagged)} {'was' if one else 'were'} "
            f"trained on (a photo, a document, another kind of scan, or an unusual X-ray?), so "
            f"{'it gives' if one else 'they give'} no verdict. Check that it is a chest X-ray.")
    if others:
        text += (f" {' and '.join(others)} still {'gives' if len(others) == 1 else 'give'} one, which means little "
                 "for such an image.")
    return text


def model_limits(predictors: dict) -> dict[str, MeasuredLimits | None]:
    """Each model's measured errors, read once from its folder (`measured_limits`), by the page's name."""
    return {name: measured_limits(p.folder, p.class_names, p.positive_class) for name, p in predictors.items()}
