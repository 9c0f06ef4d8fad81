"""What the Gradio demo does, as plain functions (app.py only lays out the page)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from .gradcam import explained_overlay
from .imaging import read_grayscale, to_model_input
from .predictor import Predictor, load_predictor

REPO_ROOT = Path(__file__).resolve().parents[1]
OVERLAY_SIDE = 448  # heatmaps are drawn over the X-ray at this size, sharper than the model's input
# Display name -> (environment variable naming another model reference, bundled folder).
DEMO_MODELS = {
    "CNN+LSTM": ("PNEUMO_CNN_LSTM_MODEL", REPO_ROOT / "models" / "cnn-lstm"),
    "ResNet50": ("PNEUMO_RESNET50_MODEL", REPO_ROOT / "models" / "resnet50"),
}


def model_references(overrides: dict | None = None) -> dict[str, str]:
    """Each demo model's reference: an override, else its environment variable, else the bundled folder."""
    overrides = overrides or {}
    return {name: overrides.get(name) or os.environ.get(variable) or str(folder)
            for name, (variable, folder) in DEMO_MODELS.items()}


def load_demo_predictors(references: dict[str, str]) -> dict[str, Predictor]:
    return {name: load_predictor(reference) for name, reference in references.items()}


def analyse(predictor: Predictor, source, explain_class: str | None = None) -> tuple[dict, np.ndarray]:
    """Prediction (JSON-friendly) and Grad-CAM overlay (uint8 RGB) of one image file by one model."""
    return analyse_gray(predictor, read_grayscale(source), explain_class)


def analyse_gray(predictor: Predictor, gray: np.ndarray, explain_class: str | None = None) -> tuple[dict, np.ndarray]:
    """`analyse` for an X-ray already decoded to its grayscale plane."""
    start = time.perf_counter()
    prediction = predictor.predict_image(to_model_input(gray, predictor.height, predictor.width))
    explained = explain_class or prediction.label
    overlay = explained_overlay(predictor, gray, explained, OVERLAY_SIDE)
    result = prediction.to_dict()
    result.update(explained_class=explained, seconds=round(time.perf_counter() - start, 3))
    return result, overlay


def compare(predictors: dict[str, Predictor], source, gray: np.ndarray | None = None):
    """Every model on the same image (decoded once), and whether their labels agree.

    Returns ({"models": {name: result}, "agree": bool}, {name: overlay}).
    """
    gray = read_grayscale(source) if gray is None else gray
    results, overlays = {}, {}
    for name, predictor in predictors.items():
        results[name], overlays[name] = analyse_gray(predictor, gray)
    labels = {result["label"] for result in results.values()}
    return {"models": results, "agree": len(labels) == 1}, overlays


def report(predictors: dict[str, Predictor], source, metadata: dict, out_path) -> Path:
    """Compare every model on `source` and write the PDF report to `out_path`."""
    from .report import build_report

    gray = read_grayscale(source)
    summary, overlays = compare(predictors, source, gray)
    xray = to_model_input(gray, OVERLAY_SIDE, OVERLAY_SIDE)
    return build_report(out_path, metadata, xray, summary["models"], overlays)


def model_summary(predictor: Predictor) -> str:
    """A short Markdown description of a model with the metrics its folder records."""
    config = predictor.config
    lines = [f"**{predictor.name}** ({config['architecture']}, input {predictor.height}x{predictor.width}, "
             f"threshold {predictor.threshold:.3f}, temperature {predictor.temperature:.2f})"]
    folder = Path(predictor.folder)
    for split in ("validation", "test"):
        path = folder / f"metrics_{split}.json"
        if path.exists():
            m = json.loads(path.read_text())
            lines.append(f"- {split}: accuracy {m['accuracy']:.3f}, sensitivity {m['sensitivity']:.3f}, "
                         f"specificity {m['specificity']:.3f}, ROC-AUC {m['roc_auc']:.3f} ({m['n_images']} images)")
    return "\n".join(lines)
