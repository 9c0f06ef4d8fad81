"""The About tab's text: every model's measured metrics, the project's targets, each model in words, and the
limitations."""

from __future__ import annotations

from .panels import model_summary, models_table
from .verdicts import TARGET_NAMES, TEST_SET_TARGETS, target_text


def about_models(predictors: dict) -> str:
    """The table of every model's metrics, and where they come from (Markdown)."""
    targets = ", ".join(f"{TARGET_NAMES[key]} {target_text(key)}" for key in TEST_SET_TARGETS)
    return ("## The models\n\n" + models_table(predictors)
            + "\n\nMetrics come from each model folder (`metrics_validation.json`, `metrics_test.json`; "
            "ECE: expected calibration error; n/a: not measured). Threshold and calibration were fitted "
            "on a patient-level validation split of the training data; the official test set was scored "
            f"once, at the end. The project's targets on the official test set: {targets}.")


def about_each_model(predictors: dict) -> dict[str, str]:
    """Each model in words (Markdown, by the page's name): what it is, its limits and the targets it misses. The
    page folds them, so that the tab stays short on a phone."""
    return {name: model_summary(predictor) for name, predictor in predictors.items()}


def about_limitations(predictors: dict) -> str:
    methods = " or ".join(dict.fromkeys(p.explanation_method for p in predictors.values()))
    return ("## Limitations\n- One hospital, children aged 1-5.\n"
            "- A verdict is only as good as the error rates above, measured on one hospital's X-rays; "
            "two models that agree can both be wrong.\n"
            f"- A heatmap ({methods}) shows where a model looked, not where the disease is.\n"
            "- Any image is treated as a frontal chest X-ray; an out-of-distribution check gives no verdict on "
            "images unlike the training X-rays (\"not a chest X-ray?\").")
