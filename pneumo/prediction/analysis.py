"""Running the models on one X-ray, as the demo, the PDF report and batch scoring's heatmaps of mistakes do:
`analyse` (one model), `compare` (several, one read of the file), `preview`."""

from __future__ import annotations

import time

import cv2
import numpy as np

from ..imaging.decoding import DecodedFile
from ..explain.overlays import (
    OVERLAY_SIDE,
    empty_heatmap_note,
    is_empty,
    overlay_backdrop,
    overlay_heatmap,
    without_heatmap,
)
from .predictor import NOT_A_CHEST_XRAY, Predictor

PREVIEW_SIDE = 512  # the longest side of the X-ray shown on the page
OUT_OF_DISTRIBUTION_HEATMAP_NOTE = ("No heatmap: this image does not look like the chest X-rays this model was "
                                    "trained on, so where it looked means little.")


def preview(source) -> np.ndarray:
    """The X-ray as the models read it (DICOM windowed and inverted as needed), uint8, at most PREVIEW_SIDE.

    From the decode the heatmaps are drawn over (OVERLAY_SIDE, which is also the decode of a 224 px model): a
    large JPEG is read at reduced scale, never whole, and a `DecodedFile` shared with the models decodes it once.
    """
    gray = DecodedFile(source).plane(OVERLAY_SIDE)
    scale = PREVIEW_SIDE / max(gray.shape)
    if scale < 1:
        gray = cv2.resize(gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)),
                          interpolation=cv2.INTER_AREA)
    return (np.clip(gray, 0, 1) * 255).astype(np.uint8)


def heatmap_backdrop(decoded: DecodedFile) -> np.ndarray:
    """The X-ray the heatmaps are drawn over (a display: the models read their own decodes)."""
    return overlay_backdrop(decoded.plane(OVERLAY_SIDE))


def analyse(predictor: Predictor, source, explain_class: str | None = None) -> tuple[dict, np.ndarray]:
    """Prediction (JSON-friendly) and heatmap overlay (uint8 RGB) of one image file by one model."""
    decoded = DecodedFile(source)
    return analyse_decoded(predictor, decoded, heatmap_backdrop(decoded), explain_class)


def analyse_decoded(predictor: Predictor, decoded: DecodedFile, background: np.ndarray,
                    explain_class: str | None = None) -> tuple[dict, np.ndarray]:
    """`analyse` for a file already read: one pass through the model gives the prediction and the heatmap,
    drawn over `background`. The model's input comes through the one image path (`Predictor.load_image`),
    so the demo's probability is batch_eval.py's for the same file."""
    start = time.perf_counter()
    prediction, heatmap = predictor.predict_and_explain(predictor.load_image(decoded), explain_class)
    explained = explain_class or prediction.label
    # An empty map is said to be empty, and the X-ray shown alone, never a flat tint captioned as a map; so is
    # the map of an image out of distribution, which gets no verdict either.
    if prediction.out_of_distribution:
        note = OUT_OF_DISTRIBUTION_HEATMAP_NOTE
    else:
        note = empty_heatmap_note(explained, predictor.explanation_method) if is_empty(heatmap) else None
    overlay = overlay_heatmap(background, heatmap) if note is None else without_heatmap(background)
    result = prediction.to_dict()
    result.update(explained_class=explained, heatmap_method=predictor.explanation_method, heatmap_note=note,
                  input_size=[predictor.height, predictor.width], seconds=round(time.perf_counter() - start, 3))
    site = site_facts(predictor.config)
    if site:
        result["site_adaptation"] = site
    return result, overlay


def site_facts(config: dict) -> dict | None:
    """What a folder adapted to a site (pneumo adapt) says about it, beside each verdict: which images, when, how
    many, the estimated prevalence and the threshold."""
    site = config.get("site_adaptation")
    if not site or "operating_point" not in site:
        return None
    point = site["operating_point"]
    return {"images": site["images"], "date": site["date"][:10], "image_count": site["image_count"],
            "batch_norm_step": site["batch_norm"]["applied"], "operating_point": point["verdict"],
            "estimated_prevalence": point["prevalence"], "prevalence_interval": point["prevalence_interval"],
            "threshold": config["threshold"]}


def compare(predictors: dict[str, Predictor], source):
    """Every model of `predictors` on the same image (decoded once), and whether their labels agree.

    Returns ({"models": {name: result}, "agree": bool}, {name: overlay}).
    """
    decoded = DecodedFile(source)
    return compare_decoded(predictors, decoded, heatmap_backdrop(decoded))


def compare_decoded(predictors: dict[str, Predictor], decoded: DecodedFile, background: np.ndarray):
    """`compare` for a file already read, its heatmaps drawn over `background`."""
    results, overlays = {}, {}
    for name, predictor in predictors.items():
        results[name], overlays[name] = analyse_decoded(predictor, decoded, background)
    # None where a model gives no verdict ("not a chest X-ray?"): there is no diagnosis to agree on.
    verdicts = {result["verdict"] for result in results.values()}
    agree = None if NOT_A_CHEST_XRAY in verdicts else len(verdicts) == 1
    return {"models": results, "agree": agree}, overlays
