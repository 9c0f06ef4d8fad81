"""What the Gradio demo does, as plain functions (app.py only lays out the page)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import model_folder
from .gradcam import overlay_backdrop, overlay_heatmap
from .imaging import read_grayscale
from .predictor import Predictor, load_predictor


def load_demo_predictors(references: dict[str, str]) -> dict[str, Predictor]:
    return {name: load_predictor(reference) for name, reference in references.items()}


def analyse(predictor: Predictor, source, explain_class: str | None = None) -> tuple[dict, np.ndarray]:
    """Prediction (JSON-friendly) and Grad-CAM overlay (uint8 RGB) of one image file by one model."""
    gray = read_grayscale(source)
    return analyse_gray(predictor, gray, overlay_backdrop(gray), explain_class)


def analyse_gray(predictor: Predictor, gray: np.ndarray, background: np.ndarray,
                 explain_class: str | None = None) -> tuple[dict, np.ndarray]:
    """`analyse` for an X-ray already decoded: one pass through the model gives the prediction and the
    heatmap, drawn over `background`."""
    start = time.perf_counter()
    prediction, heatmap = predictor.predict_and_explain(predictor.prepare(gray), explain_class)
    overlay = overlay_heatmap(background, heatmap)
    result = prediction.to_dict()
    result.update(explained_class=explain_class or prediction.label, seconds=round(time.perf_counter() - start, 3))
    return result, overlay


def compare(predictors: dict[str, Predictor], source, gray: np.ndarray | None = None):
    """Every model on the same image (decoded once), and whether their labels agree.

    Returns ({"models": {name: result}, "agree": bool}, {name: overlay}).
    """
    gray = read_grayscale(source) if gray is None else gray
    background = overlay_backdrop(gray)
    results, overlays = {}, {}
    for name, predictor in predictors.items():
        results[name], overlays[name] = analyse_gray(predictor, gray, background)
    labels = {result["label"] for result in results.values()}
    return {"models": results, "agree": len(labels) == 1}, overlays


def report(predictors: dict[str, Predictor], source, metadata: dict, out_path) -> Path:
    """Compare every model on `source` and write the PDF report to `out_path`."""
    from .pdf_report import build_report

    gray = read_grayscale(source)
    summary, overlays = compare(predictors, source, gray)
    return build_report(out_path, metadata, overlay_backdrop(gray), summary["models"], overlays)


def _metric(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return "n/a" if value is None else f"{value:.3f}"


def model_summary(predictor: Predictor) -> str:
    """A short Markdown description of a model with the metrics its folder records."""
    config = predictor.config
    lines = [f"**{predictor.name}** ({config['architecture']}, input {predictor.height}x{predictor.width}, "
             f"threshold {predictor.threshold:.3f}, temperature {predictor.calibration.temperature:.2f})"]
    for split, metrics in model_folder.read_all_metrics(predictor.folder).items():
        lines.append(f"- {split}: accuracy {_metric(metrics, 'accuracy')}, sensitivity {_metric(metrics, 'sensitivity')}, "
                     f"specificity {_metric(metrics, 'specificity')}, ROC-AUC {_metric(metrics, 'roc_auc')} "
                     f"({metrics.get('n_images', '?')} images)")
    return "\n".join(lines)
