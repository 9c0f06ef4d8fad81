"""The tables of a scored folder, each computed from the predictions table (so shards merge exactly).

Class names and the positive class come from the model that scored the folder (its run record), never
from constants. Files are written atomically; the figures are drawn by `pneumo.plots`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.metrics import classification_report

from ..training.data import subgroup_of
from ..files import write_csv, write_json
from ..metrics import compute_metrics, full_metrics, subgroup_metrics
from ..plots import plot_comparison, plot_confusion_matrix, plot_reliability, plot_roc

COMPARISON_METRICS = ["accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc"]
TABLE_FLOATS = "%.4f"  # metrics in the report tables: four decimals say all a few thousand images can


def probability_column(positive_class: str) -> str:
    """The predictions column of P(positive class): `probability_pneumonia` for the bundled models."""
    return f"probability_{positive_class.lower()}"


def prediction_columns(positive_class: str) -> list[str]:
    # ood_score: pneumo.prediction.ood's distance from the training X-rays (above 1: out_of_distribution; empty when the
    # model folder has no reference).
    # verdict: what a person is told, the predicted label or NOT_A_CHEST_XRAY where out_of_distribution (the demo's).
    return ["file", "true_label", probability_column(positive_class), "predicted_label", "threshold", "ood_score",
            "out_of_distribution", "verdict"]


FLAGGED_FILES_NAMED = 5  # the out-of-distribution files metrics.json and the console name, at most


def decisions_and_flags(predictions: pd.DataFrame, class_names) -> dict:
    """What a model decided, labeled or not, and which images it found unlike a chest X-ray (a predictions table
    has both; a table of recorded probabilities has neither). An image out of distribution gets no class: its
    verdict is NOT_A_CHEST_XRAY, counted in `out_of_distribution`, not in `decisions`."""
    counts = {}
    if "verdict" in predictions:
        counts["decisions"] = {label: int((predictions.verdict == label).sum()) for label in class_names}
    if "out_of_distribution" in predictions:
        flagged = predictions[predictions.out_of_distribution.fillna(False).astype(bool)]
        counts.update(out_of_distribution=int(len(flagged)),
                      out_of_distribution_files=sorted(flagged.file)[:FLAGGED_FILES_NAMED])
    return counts


def labeled_part(predictions: pd.DataFrame, class_names) -> pd.DataFrame:
    """The rows whose true label is known (files under a class-named folder)."""
    return predictions[predictions.true_label.fillna("").astype(str).isin(list(class_names))]


def positive_truth_and_probability(labeled: pd.DataFrame, positive_class: str):
    return ((labeled.true_label == positive_class).astype(int).to_numpy(),
            labeled[probability_column(positive_class)].to_numpy())


def model_metrics(predictions: pd.DataFrame, skipped_count: int, model: dict, detailed: bool = False,
                  intervals: bool = True) -> dict:
    """metrics.json: the library's metrics on the labeled rows, plus counts and which model scored them.

    `detailed` adds per-subgroup metrics and, unless `intervals` is False, 95% bootstrap intervals (as the model
    folders record them; the batch reports draw the intervals).
    """
    labeled = labeled_part(predictions, model["class_names"])
    summary = {"image_count": int(len(predictions)), "labeled_count": int(len(labeled)),
               "skipped_count": int(skipped_count), **decisions_and_flags(predictions, model["class_names"]), **model}
    if len(labeled):
        threshold = float(predictions.threshold.iloc[0])
        y_true, probability = positive_truth_and_probability(labeled, model["positive_class"])
        subgroups = [subgroup_of(f) for f in labeled.file]
        if not detailed:
            summary.update(compute_metrics(y_true, probability, threshold))
        elif intervals:
            summary.update(full_metrics(y_true, probability, threshold, subgroups))
        else:  # full_metrics without the bootstrap, its one costly part
            summary.update(compute_metrics(y_true, probability, threshold),
                           subgroups=subgroup_metrics(y_true, probability, threshold, subgroups))
    return summary


def classification_table(labeled: pd.DataFrame, class_names) -> pd.DataFrame:
    """scikit-learn's classification report as a table: a row per class, accuracy, macro and weighted averages."""
    report = classification_report(labeled.true_label, labeled.predicted_label, labels=list(class_names),
                                   output_dict=True, zero_division=0)
    if "accuracy" in report:
        accuracy = report.pop("accuracy")
        report["accuracy"] = {"precision": None, "recall": None, "f1-score": accuracy,
                              "support": len(labeled)}
    frame = pd.DataFrame(report).T
    frame["support"] = frame["support"].astype(int)  # a count, not "40.0"
    frame.index.name = "class"
    return frame.loc[[*class_names, "accuracy", "macro avg", "weighted avg"]]


def confusion_table(metrics: dict, class_names) -> pd.DataFrame:
    frame = pd.DataFrame(metrics["confusion_matrix"], index=[f"true {c}" for c in class_names],
                         columns=[f"predicted {c}" for c in class_names])
    frame.index.name = "true \\ predicted"
    return frame


def binary_order(class_names, positive_class: str) -> list[str]:
    """The class names in the order of the metrics' confusion matrix: the negative class, then the positive."""
    return [*[c for c in class_names if c != positive_class], positive_class]


def write_model_reports(out: Path, name: str, predictions: pd.DataFrame, skipped_count: int, model: dict, *,
                        figures: bool = True, intervals: bool = True) -> dict:
    """Everything in DIR/<model-name>/ for one model (without its figures or its metrics' bootstrap intervals
    when told); returns its metrics."""
    folder = Path(out) / name
    predictions = predictions.sort_values("file", kind="stable").reset_index(drop=True)
    write_csv(folder / "predictions.csv", predictions)
    metrics = model_metrics(predictions, skipped_count, model, detailed=True, intervals=intervals)
    write_json(folder / "metrics.json", metrics)
    labeled = labeled_part(predictions, model["class_names"])
    if not len(labeled):
        return metrics
    order = binary_order(model["class_names"], model["positive_class"])
    write_csv(folder / "classification_report.csv", classification_table(labeled, model["class_names"]), index=True,
              float_format=TABLE_FLOATS)
    write_csv(folder / "confusion_matrix.csv", confusion_table(metrics, order), index=True)
    if figures:
        title = model.get("display_name") or name  # runs recorded before display names had none
        plot_confusion_matrix(metrics, order, title, folder / "confusion_matrix.png")
        truth_and_probability = positive_truth_and_probability(labeled, model["positive_class"])
        plot_roc(*truth_and_probability, metrics, title, folder / "roc_curve.png", order)
        plot_reliability(*truth_and_probability, metrics, title, folder / "reliability_diagram.png", order)
    return metrics


def write_run_reports(out: Path, all_predictions: dict[str, pd.DataFrame], all_metrics: dict[str, dict],
                      skipped: pd.DataFrame, *, figures: bool = True) -> None:
    """comparison.csv/.png (the figure unless told), disagreements.csv and skipped.csv for the whole run."""
    out = Path(out)
    rows = []
    for name, metrics in all_metrics.items():
        rows.append({"model": name, "reference": metrics.get("reference"), "revision": metrics.get("revision"),
                     "images": metrics["image_count"], "skipped": metrics["skipped_count"],
                     "threshold": metrics.get("threshold", all_predictions[name].threshold.iloc[0]
                                              if len(all_predictions[name]) else None),
                     **{key: metrics.get(key) for key in COMPARISON_METRICS},
                     "expected_calibration_error": metrics.get("expected_calibration_error"),
                     **interval_columns(metrics)})
    comparison = pd.DataFrame(rows)
    write_csv(out / "comparison.csv", comparison, float_format=TABLE_FLOATS)
    write_csv(out / "disagreements.csv", disagreements(all_predictions))
    write_csv(out / "skipped.csv", skipped.sort_values("file").reset_index(drop=True))
    if figures and comparison[COMPARISON_METRICS].notna().any().any():
        labels = [metrics.get("display_name") or name for name, metrics in all_metrics.items()]
        if len(set(labels)) < len(labels):  # two models of one name: the output folders' names tell them apart
            labels = list(all_metrics)
        plot_comparison(dict(zip(labels, all_metrics.values())), COMPARISON_METRICS, out / "comparison.png")


def interval_columns(metrics: dict) -> dict:
    """Each metric's 95% bootstrap interval as `<metric>_low` and `<metric>_high` (empty without intervals)."""
    intervals = metrics.get("confidence_intervals_95") or {}
    return {f"{key}_{end}": (intervals.get(key) or [None, None])[i]
            for key in COMPARISON_METRICS for i, end in enumerate(("low", "high"))}


def disagreements(all_predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Images on which the models' labels differ, with every model's probability and label."""
    merged = None
    for name, predictions in all_predictions.items():
        probability = next(c for c in predictions.columns if c.startswith("probability_"))
        part = predictions.set_index("file")[["true_label", probability, "predicted_label"]]
        part = part.rename(columns={probability: f"{name} {probability}", "predicted_label": f"{name} predicted_label"})
        merged = part if merged is None else merged.join(part.drop(columns="true_label"), how="inner")
    if merged is None or len(all_predictions) < 2:
        return pd.DataFrame(columns=["file", "true_label"])
    labels = merged[[f"{name} predicted_label" for name in all_predictions]]
    differing = merged[labels.nunique(axis=1) > 1]
    return differing.sort_index().reset_index()
