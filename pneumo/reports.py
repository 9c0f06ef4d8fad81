"""Reports of a scored folder, each computed from the predictions table (so shards merge exactly).

Files are written atomically: an interrupted run never leaves a half-written CSV or figure.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import classification_report, roc_curve  # noqa: E402

from .data import CLASS_NAMES, POSITIVE_CLASS  # noqa: E402
from .metrics import compute_metrics  # noqa: E402

COMPARISON_METRICS = ["accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc"]


def atomic_write(path: Path, write) -> None:
    """Call `write(temporary_path)`, then move the finished file into place in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_csv(frame: pd.DataFrame, path: Path, index: bool = False) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=index))


def write_json(payload: dict, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2) + "\n"))


def save_figure(figure, path: Path) -> None:
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)


def labeled_part(predictions: pd.DataFrame) -> pd.DataFrame:
    """The rows whose true label is known (files under a NORMAL/ or PNEUMONIA/ folder)."""
    return predictions[predictions.true_label.fillna("").astype(str).isin(CLASS_NAMES)]


def model_metrics(predictions: pd.DataFrame, skipped_count: int, model: dict) -> dict:
    """metrics.json: the library's metrics on the labeled rows, plus counts and which model scored them."""
    labeled = labeled_part(predictions)
    summary = {"image_count": int(len(predictions)), "labeled_count": int(len(labeled)),
               "skipped_count": int(skipped_count), **model}
    if len(labeled):
        threshold = float(predictions.threshold.iloc[0])
        y_true = (labeled.true_label == POSITIVE_CLASS).astype(int).to_numpy()
        summary.update(compute_metrics(y_true, labeled.probability_pneumonia.to_numpy(), threshold))
    return summary


def classification_table(labeled: pd.DataFrame) -> pd.DataFrame:
    """scikit-learn's classification report as a table: a row per class, accuracy, macro and weighted averages."""
    report = classification_report(labeled.true_label, labeled.predicted_label, labels=list(CLASS_NAMES),
                                   output_dict=True, zero_division=0)
    if "accuracy" in report:
        accuracy = report.pop("accuracy")
        report["accuracy"] = {"precision": None, "recall": None, "f1-score": accuracy,
                              "support": len(labeled)}
    frame = pd.DataFrame(report).T
    frame.index.name = "class"
    return frame.loc[[*CLASS_NAMES, "accuracy", "macro avg", "weighted avg"]]


def confusion_table(metrics: dict) -> pd.DataFrame:
    frame = pd.DataFrame(metrics["confusion_matrix"], index=[f"true {c}" for c in CLASS_NAMES],
                         columns=[f"predicted {c}" for c in CLASS_NAMES])
    frame.index.name = "true \\ predicted"
    return frame


def plot_confusion_matrix(metrics: dict, title: str, path: Path) -> None:
    import seaborn as sns

    counts = np.array(metrics["confusion_matrix"])
    row_percent = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) * 100
    annotations = np.array([[f"{n}\n{p:.1f}%" for n, p in zip(row_n, row_p)] for row_n, row_p in zip(counts, row_percent)])
    figure, axis = plt.subplots(figsize=(4.6, 4))
    sns.heatmap(row_percent, annot=annotations, fmt="", cmap="Blues", vmin=0, vmax=100, cbar=False,
                xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES, ax=axis)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"{title}\n(counts and % of each true class)")
    figure.tight_layout()
    save_figure(figure, path)


def plot_roc(labeled: pd.DataFrame, metrics: dict, title: str, path: Path) -> None:
    y_true = (labeled.true_label == POSITIVE_CLASS).astype(int)
    figure, axis = plt.subplots(figsize=(4.6, 4))
    if metrics.get("roc_auc") is not None:
        fpr, tpr, _ = roc_curve(y_true, labeled.probability_pneumonia)
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


def write_model_reports(out: Path, name: str, predictions: pd.DataFrame, skipped_count: int, model: dict) -> dict:
    """Everything in DIR/<model-name>/ for one model; returns its metrics."""
    folder = Path(out) / name
    predictions = predictions.sort_values("file", kind="stable").reset_index(drop=True)
    write_csv(predictions, folder / "predictions.csv")
    metrics = model_metrics(predictions, skipped_count, model)
    write_json(metrics, folder / "metrics.json")
    labeled = labeled_part(predictions)
    if len(labeled):
        write_csv(classification_table(labeled), folder / "classification_report.csv", index=True)
        write_csv(confusion_table(metrics), folder / "confusion_matrix.csv", index=True)
        plot_confusion_matrix(metrics, name, folder / "confusion_matrix.png")
        plot_roc(labeled, metrics, name, folder / "roc_curve.png")
    return metrics


def write_run_reports(out: Path, all_predictions: dict[str, pd.DataFrame], all_metrics: dict[str, dict],
                      skipped: pd.DataFrame) -> None:
    """comparison.csv/.png, disagreements.csv and skipped.csv for the whole run."""
    out = Path(out)
    rows = []
    for name, metrics in all_metrics.items():
        rows.append({"model": name, "reference": metrics.get("reference"), "revision": metrics.get("revision"),
                     "images": metrics["image_count"], "skipped": metrics["skipped_count"],
                     "threshold": metrics.get("threshold", all_predictions[name].threshold.iloc[0]
                                              if len(all_predictions[name]) else None),
                     **{key: metrics.get(key) for key in COMPARISON_METRICS}})
    comparison = pd.DataFrame(rows)
    write_csv(comparison, out / "comparison.csv")
    write_csv(disagreements(all_predictions), out / "disagreements.csv")
    write_csv(skipped.sort_values("file").reset_index(drop=True), out / "skipped.csv")
    if comparison[COMPARISON_METRICS].notna().any().any():
        plot_comparison(comparison, out / "comparison.png")


def disagreements(all_predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Images on which the models' labels differ, with every model's probability and label."""
    merged = None
    for name, predictions in all_predictions.items():
        part = predictions.set_index("file")[["true_label", "probability_pneumonia", "predicted_label"]]
        part = part.rename(columns={"probability_pneumonia": f"{name} probability_pneumonia",
                                    "predicted_label": f"{name} predicted_label"})
        merged = part if merged is None else merged.join(part.drop(columns="true_label"), how="inner")
    if merged is None or len(all_predictions) < 2:
        return pd.DataFrame(columns=["file", "true_label"])
    labels = merged[[f"{name} predicted_label" for name in all_predictions]]
    differing = merged[labels.nunique(axis=1) > 1]
    return differing.sort_index().reset_index()


def plot_comparison(comparison: pd.DataFrame, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(comparison)
    positions = np.arange(len(COMPARISON_METRICS))
    for offset, (_, row) in enumerate(comparison.iterrows()):
        values = [row[m] if row[m] is not None and not pd.isna(row[m]) else 0 for m in COMPARISON_METRICS]
        bars = axis.bar(positions + offset * width, values, width, label=row["model"])
        axis.bar_label(bars, fmt="%.2f", fontsize=7)
    axis.set_xticks(positions + width * (len(comparison) - 1) / 2, COMPARISON_METRICS)
    axis.set_ylim(0, 1.08)
    axis.legend(loc="lower left", fontsize=8)
    axis.set_title("Models compared on the same images")
    figure.tight_layout()
    save_figure(figure, path)
