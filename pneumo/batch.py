"""Score whole folders: discovery, sharding, streaming inference that skips bad files, and merging shards.

Decoding runs in parallel with inference through tf.data and nothing is cached, so memory stays flat
however many images a folder holds. Every report is computed from the predictions table alone, which is
what lets `merge` rebuild a sharded run exactly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .data import CLASS_NAMES, POSITIVE_CLASS
from .errors import InvalidImageError
from .imaging import load_model_input

PREDICTION_COLUMNS = ["file", "true_label", "probability_pneumonia", "predicted_label", "threshold"]
SKIPPED_COLUMNS = ["file", "reason"]


@dataclass(frozen=True)
class ImageFile:
    path: Path
    relative: str          # the path as reported in CSVs (relative to the scored folder)
    true_label: str | None  # NORMAL / PNEUMONIA from the nearest class folder, None when unlabeled


def label_from_folders(relative: Path) -> str | None:
    """The class named by the nearest enclosing folder (any case), e.g. test/normal/x.png -> NORMAL."""
    for part in reversed(relative.parts[:-1]):
        if part.upper() in CLASS_NAMES:
            return part.upper()
    return None


def discover(folder, shard: tuple[int, int] = (0, 1)) -> list[ImageFile]:
    """Every non-hidden file under `folder` (recursive), sorted, restricted to shard `index` of `count`.

    Files are not filtered by extension: a file that is not an image is reported as skipped, not ignored.
    """
    folder = Path(folder)
    index, count = shard
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        if count > 1 and shard_of(relative.as_posix(), count) != index:
            continue
        files.append(ImageFile(path, relative.as_posix(), label_from_folders(relative)))
    return files


def shard_of(relative_path: str, count: int) -> int:
    """A stable shard number from the file's relative path (the same on every machine and run)."""
    return int(hashlib.sha1(relative_path.encode()).hexdigest(), 16) % count


def stream_scores(predictor, files: list[ImageFile], batch_size: int = 32):
    """Yield (file, P(positive) or None, error message or None) in order, decoding in parallel with inference."""
    import tensorflow as tf

    height, width = predictor.height, predictor.width

    def decode(path):
        try:
            return load_model_input(path.decode(), height, width), b""
        except InvalidImageError as error:
            return np.zeros((height, width, 3), np.float32), str(error).encode()

    def load(path):
        image, error = tf.numpy_function(decode, [path], (tf.float32, tf.string), stateful=False)
        image.set_shape((height, width, 3))
        return image, error

    dataset = (tf.data.Dataset.from_tensor_slices([str(f.path) for f in files])
               .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .batch(batch_size)
               .prefetch(tf.data.AUTOTUNE))
    position = 0
    for images, errors in dataset:
        errors = [e.decode() for e in errors.numpy()]
        good = np.array([not e for e in errors])
        probabilities = np.full(len(errors), np.nan)
        if good.any():
            probabilities[good] = predictor.probabilities(images.numpy()[good])[:, predictor.positive_index]
        for offset, error in enumerate(errors):
            file = files[position + offset]
            yield file, (None if error else float(probabilities[offset])), (error or None)
        position += len(errors)


def score(predictor, files: list[ImageFile], threshold: float | None = None, batch_size: int = 32,
          progress=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, skipped) tables for one model. `progress(n)` is called after each image."""
    threshold = predictor.threshold if threshold is None else float(threshold)
    rows, skipped = [], []
    for file, probability, error in stream_scores(predictor, files, batch_size):
        if error:
            skipped.append((file.relative, reason_of(error, file)))
        else:
            rows.append((file.relative, file.true_label or "", probability,
                         predictor.label_for(probability, threshold), threshold))
        if progress:
            progress(1)
    return (pd.DataFrame(rows, columns=PREDICTION_COLUMNS), pd.DataFrame(skipped, columns=SKIPPED_COLUMNS))


def reason_of(error: str, file: ImageFile) -> str:
    """The error without the (already listed) file path."""
    prefix = f"{file.path}: "
    return error[len(prefix):] if error.startswith(prefix) else error


class NothingToScore(Exception):
    """The folder (or shard) holds no file at all."""


def unique_names(predictors) -> list[str]:
    """Output folder names: each model's own name, numbered when two models share one."""
    names = []
    for predictor in predictors:
        name, number = predictor.name, 2
        while name in names:
            name, number = f"{predictor.name}-{number}", number + 1
        names.append(name)
    return names


def model_record(predictor) -> dict:
    return {"model": predictor.name, "reference": predictor.reference, "revision": predictor.revision}


def run_folder(folder, out, predictors, *, batch_size: int = 32, threshold: float | None = None,
               gradcam: int = 0, shard: tuple[int, int] = (0, 1), show_progress: bool = True) -> dict[str, dict]:
    """Score `folder` with every predictor and write all reports under `out`; returns metrics per model."""
    from tqdm import tqdm

    from .reports import write_json, write_model_reports, write_run_reports

    files = discover(folder, shard)
    if not files:
        raise NothingToScore(f"{folder}: no files to score" + (f" in shard {shard[0]}/{shard[1]}" if shard[1] > 1 else ""))
    names = unique_names(predictors)
    all_predictions, skipped_frames, records = {}, [], {}
    for name, predictor in zip(names, predictors):
        with tqdm(total=len(files), desc=name, unit="img", disable=not show_progress) as bar:
            predictions, skipped = score(predictor, files, threshold, batch_size, bar.update)
        all_predictions[name], records[name] = predictions, model_record(predictor)
        skipped_frames.append(skipped)
    skipped = pd.concat(skipped_frames).drop_duplicates("file")
    all_metrics = {name: write_model_reports(out, name, all_predictions[name], len(skipped), records[name])
                   for name in names}
    write_run_reports(out, all_predictions, all_metrics, skipped)
    write_json({"folder": str(folder), "shard": list(shard), "models": records}, Path(out) / "run.json")
    if gradcam:
        for name, predictor in zip(names, predictors):
            write_confident_mistakes(Path(out) / name / "gradcam", predictor, all_predictions[name], folder, gradcam)
    return all_metrics


def merge_runs(run_folders, out) -> dict[str, dict]:
    """Combine the outputs of sharded runs and recompute every report as if one run had scored it all."""
    from .reports import write_json, write_model_reports, write_run_reports

    runs = [json.loads((Path(folder) / "run.json").read_text()) for folder in run_folders]
    names = list(runs[0]["models"])
    if any(list(run["models"]) != names for run in runs):
        raise ValueError("the runs to merge were scored with different models")
    read = {"keep_default_na": False, "float_precision": "round_trip"}
    all_predictions = {name: pd.concat([pd.read_csv(Path(f) / name / "predictions.csv", **read) for f in run_folders])
                       for name in names}
    skipped = pd.concat([pd.read_csv(Path(f) / "skipped.csv", **read) for f in run_folders]).drop_duplicates("file")
    all_metrics = {name: write_model_reports(out, name, all_predictions[name], len(skipped), runs[0]["models"][name])
                   for name in names}
    write_run_reports(out, all_predictions, all_metrics, skipped)
    write_json({"folder": runs[0]["folder"], "merged_from": [str(f) for f in run_folders],
                "models": runs[0]["models"]}, Path(out) / "run.json")
    return all_metrics


def write_confident_mistakes(folder: Path, predictor, predictions: pd.DataFrame, root, count: int) -> None:
    """Grad-CAM overlays of the `count` mistakes the model was most sure of, and an index of them."""
    import cv2

    from .gradcam import explained_overlay
    from .imaging import read_grayscale
    from .reports import atomic_write, labeled_part, write_csv

    labeled = labeled_part(predictions)
    mistakes = labeled[labeled.true_label != labeled.predicted_label].copy()
    mistakes["confidence"] = np.where(mistakes.predicted_label == POSITIVE_CLASS, mistakes.probability_pneumonia,
                                      1 - mistakes.probability_pneumonia)
    mistakes = mistakes.sort_values(["confidence", "file"], ascending=[False, True]).head(count)
    images = []
    for rank, row in enumerate(mistakes.itertuples(), start=1):
        overlay = explained_overlay(predictor, read_grayscale(Path(root) / row.file), row.predicted_label)
        name = f"{rank:02d}_{Path(row.file).stem}.png"
        encoded = cv2.imencode(".png", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))[1].tobytes()
        atomic_write(folder / name, lambda tmp, data=encoded: Path(tmp).write_bytes(data))
        images.append(name)
    write_csv(mistakes.assign(overlay=images), folder / "index.csv")
