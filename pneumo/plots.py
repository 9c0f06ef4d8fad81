"""Every figure pneumo draws, built from numbers the library already computed (history rows, metrics
dicts, prediction tables); none recomputes a metric beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .files import atomic_write

PRINT_DPI = 200  # sharp on paper and on high-density screens


def new_figure(rows: int = 1, cols: int = 1, figsize=(4.6, 4)):
    """A figure and its axes, drawn without pyplot: no GUI backend to choose, no global figure to close."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, cols)


def save_figure(figure, path: Path, dpi: int = PRINT_DPI) -> None:
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=dpi, format="png"))


def sample_size(metrics: dict, class_names) -> str:
    """'n = 624 (234 NORMAL, 390 PNEUMONIA)' from the confusion matrix (rows: the classes in `class_names` order)."""
    rows = [sum(row) for row in metrics["confusion_matrix"]]
    return f"n = {sum(rows)} (" + ", ".join(f"{count} {name}" for count, name in zip(rows, class_names)) + ")"


def _interval(metrics: dict, key: str) -> list[float] | None:
    return (metrics.get("confidence_intervals_95") or {}).get(key)


def plot_training_curves(history_csv: Path, out_png: Path) -> None:
    """Loss and accuracy per epoch, training vs validation, side by side."""
    history = pd.read_csv(history_csv)
    epochs = history["epoch"] + 1
    figure, (loss_axis, accuracy_axis) = new_figure(1, 2, figsize=(10, 4))
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
    figure, axis = new_figure(figsize=(4.6, 4))
    sns.heatmap(row_percent, annot=annotations, fmt="", cmap="Blues", vmin=0, vmax=100, cbar=False,
                xticklabels=class_names, yticklabels=class_names, ax=axis)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"{title}\n(counts and % of each true class)")
    figure.tight_layout()
    save_figure(figure, path)


def plot_roc(y_true, prob_positive, metrics: dict, title: str, path: Path, class_names) -> None:
    """The ROC curve with its AUC and the model's operating point, each with its 95% bootstrap interval."""
    from sklearn.metrics import roc_curve

    figure, axis = new_figure(figsize=(4.6, 4.4))
    if metrics.get("roc_auc") is not None:
        fpr, tpr, _ = roc_curve(y_true, prob_positive)
        auc_interval = _interval(metrics, "roc_auc")
        axis.plot(fpr, tpr, label=f"AUC {metrics['roc_auc']:.3f}"
                  + (f" (95% CI {auc_interval[0]:.3f}-{auc_interval[1]:.3f})" if auc_interval else ""))
        sensitivity, specificity = metrics["sensitivity"], metrics["specificity"]
        errors = {}  # error bar lengths below and above the point (a percentile interval may miss the estimate)
        if interval := _interval(metrics, "sensitivity"):
            errors["yerr"] = [[max(sensitivity - interval[0], 0)], [max(interval[1] - sensitivity, 0)]]
        if interval := _interval(metrics, "specificity"):  # drawn as 1 - specificity: the interval flips
            errors["xerr"] = [[max(interval[1] - specificity, 0)], [max(specificity - interval[0], 0)]]
        axis.errorbar([1 - specificity], [sensitivity], fmt="o", capsize=3, **errors,
                      label=f"threshold {metrics['threshold']:.3f}: sensitivity {sensitivity:.2f}, "
                            f"specificity {specificity:.2f}")
        axis.legend(loc="lower right", fontsize=7)
    axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
    axis.set_xlabel("1 - specificity")
    axis.set_ylabel("sensitivity")
    axis.set_title(f"{title}\n{sample_size(metrics, class_names)}", fontsize=10)
    if _interval(metrics, "roc_auc"):
        figure.text(0.01, 0.01, "bars and CI: 95% bootstrap intervals (1,000 resamples)", fontsize=6, color="grey")
    figure.tight_layout()
    save_figure(figure, path)


def plot_reliability(y_true, prob_positive, metrics: dict, title: str, path: Path, class_names,
                     bins: int = 10) -> None:
    """The calibration curve: in each probability bin, the fraction of images that are positive."""
    from sklearn.calibration import calibration_curve

    figure, axis = new_figure(figsize=(4.6, 4))
    observed, predicted = calibration_curve(y_true, prob_positive, n_bins=bins, strategy="uniform")
    ece = metrics.get("expected_calibration_error")
    axis.plot(predicted, observed, "o-", label="model" + (f" (ECE {ece:.3f})" if ece is not None else ""))
    axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("predicted probability")
    axis.set_ylabel("observed fraction positive")
    axis.set_title(f"{title}\n{sample_size(metrics, class_names)}", fontsize=10)
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)


def plot_comparison(models: dict[str, dict], metric_names, path: Path) -> None:
    """Every model's metrics side by side (`models`: display name -> metrics), with 95% bootstrap intervals as
    error bars and each model's number of labeled images; the legend sits above the bars, never over one."""
    # Wider for more models, so that every bar keeps room for its value.
    figure, axis = new_figure(figsize=(7.5 + 1.5 * max(len(models) - 2, 0), 4))
    width = 0.8 / len(models)
    positions = np.arange(len(metric_names))
    for offset, (name, metrics) in enumerate(models.items()):
        values = [metrics.get(m) if metrics.get(m) is not None else 0.0 for m in metric_names]
        intervals = [_interval(metrics, m) or [v, v] for m, v in zip(metric_names, values)]
        errors = [[max(v - low, 0) for v, (low, _) in zip(values, intervals)],
                  [max(high - v, 0) for v, (_, high) in zip(values, intervals)]]
        bars = axis.bar(positions + offset * width, values, width, yerr=errors, capsize=2, error_kw={"linewidth": 0.8},
                        label=f"{name} (n = {metrics.get('labeled_count', metrics.get('n_images', '?'))})")
        axis.bar_label(bars, fmt="%.2f", label_type="center", fontsize=7, color="white")
    axis.set_xticks(positions + width * (len(models) - 1) / 2, [m.replace("_", "-") for m in metric_names])
    axis.set_ylim(0, 1.05)
    axis.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(models), 4), fontsize=8, frameon=False)
    figure.suptitle("Models compared on the same images (error bars: 95% bootstrap intervals)", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)


def plot_heatmap(overlay: np.ndarray, title: str, note: str | None, path: Path) -> None:
    """A heatmap drawn over its X-ray (uint8 RGB), titled, with its colour scale, or with `note` in place of the
    scale where the map was empty (the X-ray is then shown alone)."""
    import textwrap

    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable

    figure, axes = new_figure(figsize=(4.6, 5.4))
    axes.imshow(overlay)
    axes.set_axis_off()
    axes.set_title(title, fontsize=8, loc="left")
    if note is None:
        # OpenCV's JET, as the overlay is drawn (pneumo.explain.overlays), is matplotlib's "jet".
        scale = figure.colorbar(ScalarMappable(cmap=colormaps["jet"]), ax=axes, orientation="horizontal",
                                fraction=0.04, pad=0.03, ticks=[0, 1])
        scale.ax.set_xticklabels(["low", "high"], fontsize=7)
        scale.set_label("contribution to the class explained", fontsize=7)
    else:
        axes.text(0.0, -0.03, textwrap.fill(note, 70), transform=axes.transAxes, va="top", fontsize=7,
                  color="#8a1c12")
    figure.tight_layout()
    save_figure(figure, path, dpi=150)
