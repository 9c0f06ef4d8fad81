"""Every figure pneumo draws, built from numbers the library already computed (history rows, metrics
dicts, prediction tables); none recomputes a metric beside them."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .files import atomic_write  # noqa: E402


def save_figure(figure, path: Path, dpi: int = 110) -> None:
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=dpi, format="png"))
    plt.close(figure)


def plot_training_curves(history_csv: Path, out_png: Path) -> None:
    """Loss and accuracy per epoch, training vs validation, side by side."""
    history = pd.read_csv(history_csv)
    epochs = history["epoch"] + 1
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
        axis.plot(epochs, history[metric], label="training")
        axis.plot(epochs, history[f"val_{metric}"], label="validation")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    save_figure(figure, out_png, dpi=100)


def plot_confusion_matrix(metrics: dict, class_names, title: str, path: Path) -> None:
    import seaborn as sns

    counts = np.array(metrics["confusion_matrix"])
    row_percent = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) * 100
    annotations = np.array([[f"{n}\n{p:.1f}%" for n, p in zip(row_n, row_p)] for row_n, row_p in zip(counts, row_percent)])
    figure, axis = plt.subplots(figsize=(4.6, 4))
    sns.heatmap(row_percent, annot=annotations, fmt="", cmap="Blues", vmin=0, vmax=100, cbar=False,
                xticklabels=class_names, yticklabels=class_names, ax=axis)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"{title}\n(counts and % of each true class)")
    figure.tight_layout()
    save_figure(figure, path)


def plot_roc(y_true, prob_positive, metrics: dict, title: str, path: Path) -> None:
    from sklearn.metrics import roc_curve

    figure, axis = plt.subplots(figsize=(4.6, 4))
    if metrics.get("roc_auc") is not None:
        fpr, tpr, _ = roc_curve(y_true, prob_positive)
        axis.plot(fpr, tpr, label=f"AUC = {metrics['roc_auc']:.3f}")
        axis.plot([1 - metrics["specificity"]], [metrics["sensitivity"]], "o",
                  label=f"threshold {metrics['threshold']:.3f}")
        axis.legend(loc="lower right")
    axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
    axis.set_xlabel("1 - specificity")
    axis.set_ylabel("sensitivity")
    axis.set_title(title)
    figure.tight_layout()
    save_figure(figure, path)


def plot_reliability(y_true, prob_positive, metrics: dict, title: str, path: Path, bins: int = 10) -> None:
    """The calibration curve: in each probability bin, the fraction of images that are positive."""
    from sklearn.calibration import calibration_curve

    figure, axis = plt.subplots(figsize=(4.6, 4))
    observed, predicted = calibration_curve(y_true, prob_positive, n_bins=bins, strategy="uniform")
    ece = metrics.get("expected_calibration_error")
    axis.plot(predicted, observed, "o-", label="model" + (f" (ECE {ece:.3f})" if ece is not None else ""))
    axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("predicted probability")
    axis.set_ylabel("observed fraction positive")
    axis.set_title(title)
    axis.legend(loc="upper left")
    figure.tight_layout()
    save_figure(figure, path)


def plot_comparison(comparison: pd.DataFrame, metric_names, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(comparison)
    positions = np.arange(len(metric_names))
    for offset, (_, row) in enumerate(comparison.iterrows()):
        values = [row[m] if row[m] is not None and not pd.isna(row[m]) else 0 for m in metric_names]
        bars = axis.bar(positions + offset * width, values, width, label=row["model"])
        axis.bar_label(bars, fmt="%.2f", fontsize=7)
    axis.set_xticks(positions + width * (len(comparison) - 1) / 2, metric_names)
    axis.set_ylim(0, 1.08)
    axis.legend(loc="lower left", fontsize=8)
    axis.set_title("Models compared on the same images")
    figure.tight_layout()
    save_figure(figure, path)
