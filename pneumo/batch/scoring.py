"""Score whole folders: discovery, sharding, streaming inference that skips bad files, and merging shards.

Decoding runs in parallel with inference (`data.readable_batches`) and nothing is cached, so memory stays
flat however many images a folder holds. Every report is computed from the predictions table alone, which is
what lets `merge` rebuild a sharded run exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np
import pandas as pd

from ..prediction.analysis import analyse
from ..prediction.ood import is_flagged
from ..prediction.predictor import verdict_of
from .reports import (
    labeled_part,
    prediction_columns,
    probability_column,
    write_model_reports,
    write_run_reports,
)
from .watchdog import DEFAULT_STALL_S, Watchdog
from ..training.data import label_from_folders, readable_batches
from ..errors import DataFolderError, NothingToScoreError
from ..files import write_csv, write_json

SKIPPED_COLUMNS = ["file", "reason"]
RUN_FILE = "run.json"
# Under --out: each model's scores, batch by batch, while a run is under way (see run_folder).
PARTS_FOLDER = ".parts"
# Under --out/<model>/: the heatmaps of its most confident mistakes (--heatmaps K) and their index.csv.
HEATMAPS_FOLDER = "heatmaps"


@dataclass(frozen=True)
class ImageFile:
    path: Path
    relative: Path  # the path as reported in CSVs is relative to the scored folder

    def true_label(self, class_names) -> str | None:
        """The class its nearest class-named folder gives it, None when unlabeled."""
        return label_from_folders(self.relative, class_names)


def discover(folder, shard: tuple[int, int] = (0, 1)) -> list[ImageFile]:
    """Every non-hidden file under `folder` (recursive), sorted, restricted to shard `index` of `count`.

    Files are not filtered by extension: a file that is not an image is reported as skipped, not ignored.
    """
    folder = Path(folder)
    files = (ImageFile(path, path.relative_to(folder)) for path in sorted(folder.rglob("*")) if path.is_file())
    return [file for file in files if is_listed(file.relative, shard)]


def is_listed(relative: PurePath, shard: tuple[int, int] = (0, 1)) -> bool:
    """Whether a file at `relative` is scored: no hidden part in its path, and in shard `index` of `count`."""
    index, count = shard
    if any(part.startswith(".") for part in relative.parts):
        return False
    return count <= 1 or shard_of(relative.as_posix(), count) == index


def shard_of(relative_path: str, count: int) -> int:
    """A stable shard number from the file's relative path (the same on every machine and run)."""
    return int(hashlib.sha1(relative_path.encode()).hexdigest(), 16) % count


def stream_scores(predictor, files: list[ImageFile], batch_size: int = 32, watchdog=None):
    """Yield (file, class probabilities or None, out-of-distribution score (NaN without a reference),
    error message or None) in order, decoding the next batch while the model scores this one. A `watchdog`
    (pneumo.batch.watchdog) hears of each file read and each batch scored."""
    def watched_load(path):
        with watchdog.working("reading"):
            return predictor.load_image(path)

    load = predictor.load_image if watchdog is None else watched_load

    position = 0
    for images, readable, unreadable in readable_batches([f.path for f in files], load, predictor.input_shape,
                                                         batch_size):
        with watchdog.working("scoring", len(readable) + len(unreadable)) if watchdog else contextlib.nullcontext():
            scored = dict(zip(readable.tolist(), zip(*predictor.assess(images)))) if len(images) else {}
        reasons = iter(unreadable)
        end = position + len(readable) + len(unreadable)
        for index in range(position, end):
            if index in scored:
                yield files[index], *scored[index], None
            else:
                yield files[index], None, np.nan, next(reasons)
        position = end


def score(predictor, files: list[ImageFile], threshold: float | None = None, batch_size: int = 32,
          progress=None, parts: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, skipped) tables for one model. `progress(n)` is called as images are done; `parts` as
    in `file_scores`."""
    threshold = predictor.threshold if threshold is None else float(threshold)
    return predictions_and_skipped(predictor, files, file_scores(predictor, files, batch_size, progress, parts),
                                   threshold)


def file_scores(predictor, files: list[ImageFile], batch_size: int = 32, progress=None,
                parts: Path | None = None, watchdog=None) -> pd.DataFrame:
    """Each file's P(positive), out-of-distribution score and reason skipped (PART_COLUMNS, indexed by file).

    With `parts` (a folder), each batch's scores reach the disk there as one CSV file, written atomically,
    as the run goes; files already in it (from an interrupted run) are not scored again. Their batches
    were whole and the rest are batched as before, so the tables equal an uninterrupted run's. A `watchdog`
    follows the reading and scoring (`stream_scores`).
    """
    written = ScoreParts(parts)
    todo = [f for f in files if f.relative.as_posix() not in written.done]
    if progress and len(files) > len(todo):
        progress(len(files) - len(todo))
    if watchdog is not None:
        watchdog.begin(reading=len(todo), scoring=len(todo))
    batch = []
    for file, probabilities, ood_score, error in stream_scores(predictor, todo, batch_size, watchdog):
        batch.append((file.relative.as_posix(), None if error else float(probabilities[predictor.positive_index]),
                      ood_score, reason_of(error, file) if error else ""))
        if len(batch) == batch_size or file is todo[-1]:
            written.add(pd.DataFrame(batch, columns=PART_COLUMNS))
            if progress:
                progress(len(batch))
            batch = []
    return written.table(files)


def ensemble_file_scores(predictor, scored: dict[int, pd.DataFrame]) -> pd.DataFrame | None:
    """An ensemble's file scores from its members' (`scored`, by id of the predictor), when this run scored
    every member: the same numbers as scoring it afresh, without running each member twice. None for a single
    model, or an ensemble with a member not scored."""
    members = getattr(predictor, "members", None)
    if not members or any(id(member) not in scored for member in members):
        return None
    frames = [scored[id(member)] for member in members]
    positive = np.stack([frame.probability.to_numpy(float) for frame in frames], axis=1)
    reasons = [next((reason for reason in row if reason), "") for row in zip(*(frame.reason for frame in frames))]
    return pd.DataFrame({"probability": predictor.combine(positive)[:, predictor.positive_index],
                         "ood_score": np.mean([frame.ood_score.to_numpy(float) for frame in frames], axis=0),
                         "reason": reasons}, index=frames[0].index)


# One row per file in a part: P(positive class) and the out-of-distribution score, or why it was skipped.
PART_COLUMNS = ["file", "probability", "ood_score", "reason"]


class ScoreParts:
    """One model's scores as a run receives them, batch by batch (PART_COLUMNS frames). With a `folder`, each batch
    also reaches the disk there as one CSV file, written atomically, and what an interrupted run left there is read
    back first (`done`: the files it holds), for both engines."""

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder else None
        self.frames = [read_parts(folder)]
        self.done = set(self.frames[0].file)
        self._next_part = len(done_parts(folder))

    def add(self, frame: pd.DataFrame, write: bool = True) -> None:
        """`frame`'s scores, written down as a part unless `write` is false."""
        if self.folder and write:
            write_csv(self.folder / f"part-{self._next_part:06d}.csv", frame)
            self._next_part += 1
        self.frames.append(frame)

    def table(self, files: list[ImageFile]) -> pd.DataFrame:
        """Every file's scores, indexed by relative path, in `files` order."""
        frames = [frame for frame in self.frames if len(frame)] or self.frames[:1]
        return pd.concat(frames, ignore_index=True).set_index("file").loc[[f.relative.as_posix() for f in files]]


def done_parts(parts) -> list[Path]:
    return sorted(Path(parts).glob("part-*.csv")) if parts and Path(parts).is_dir() else []


def read_parts(parts) -> pd.DataFrame:
    frames = [pd.read_csv(path, keep_default_na=False, na_values={"probability": [""], "ood_score": [""]},
                          float_precision="round_trip", dtype={"file": str, "reason": str})
              for path in done_parts(parts)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PART_COLUMNS)


def predictions_and_skipped(predictor, files: list[ImageFile], scores: pd.DataFrame, threshold: float):
    """The predictions and skipped tables from the per-file scores (indexed by relative path)."""
    rows, skipped = [], []
    for file in files:
        name = file.relative.as_posix()
        entry = scores.loc[name]
        if entry.reason:
            skipped.append((name, entry.reason))
            continue
        positive = float(entry.probability)
        ood_score = float(entry.ood_score)
        label = predictor.decide(binary_probabilities(predictor, positive), threshold)
        flagged = is_flagged(ood_score)
        rows.append((name, file.true_label(predictor.class_names) or "", positive, label, threshold, ood_score,
                     flagged, verdict_of(label, flagged)))
    return (pd.DataFrame(rows, columns=prediction_columns(predictor.positive_class)),
            pd.DataFrame(skipped, columns=SKIPPED_COLUMNS))


def binary_probabilities(predictor, positive: float) -> np.ndarray:
    """Both classes' probabilities from the positive one (the models are binary)."""
    probabilities = np.empty(len(predictor.class_names))
    probabilities[:] = 1.0 - positive
    probabilities[predictor.positive_index] = positive
    return probabilities


def reason_of(error: str, file: ImageFile) -> str:
    """The error without the (already listed) file path."""
    prefix = f"{file.path}: "
    return error.removeprefix(prefix)


def folder_name(name) -> str:
    """A model's name as one harmless folder name under --out. A model folder (or a Hub repo) names its model
    in its pneumo.json, and may call it anything, `../..` included: characters other than letters, digits,
    spaces and `+-_.` become `-`, and leading dots, dashes and spaces go (no hidden folder, no `.` or `..`);
    a name with nothing left is `model`."""
    return re.sub(r"[^\w +.-]", "-", str(name)).lstrip(".- ").rstrip(". ") or "model"


def unique_names(predictors) -> list[str]:
    """Output folder names: each model's own name as a folder name, numbered when two models share one."""
    names = []
    for predictor in predictors:
        base = folder_name(predictor.name)
        name, number = base, 2
        while name in names:
            name, number = f"{base}-{number}", number + 1
        names.append(name)
    return names


def model_record(predictor) -> dict:
    """Which model scored a run, the name figures give it (the demo's, for the bundled models), and the classes
    its predictions speak of (enough to merge runs), and the site it was adapted to, if it was (pneumo.site.adapt)."""
    record = {"model": predictor.name, "display_name": predictor.display_name,
              "reference": predictor.reference, "revision": predictor.revision,
              "class_names": list(predictor.class_names), "positive_class": predictor.positive_class}
    site = predictor.config.get("site_adaptation")
    if site:  # without its date: a resumed run adapts again and must match
        point = site["operating_point"]
        record["adaptation"] = (f"adapted without labels to {site['images']} ({site['image_count']} images), from "
                                f"{site['source']}: batch-norm step {'taken' if site['batch_norm']['applied'] else 'not taken'}"
                                f", site operating point {point['verdict']}"
                                + (f" (threshold {point['threshold']:.4f})" if point["verdict"] == "trusted" else ""))
    return record


def run_folder(folder, out, predictors, *, batch_size: int = 32, threshold: float | None = None,
               heatmaps: int = 0, shard: tuple[int, int] = (0, 1), show_progress: bool = True,
               resume: bool = False, figures: bool = True, intervals: bool = True,
               stall_s: float | None = DEFAULT_STALL_S, hard_exit: bool = False) -> dict[str, dict]:
    """Score `folder` with every predictor and write all reports under `out`; returns metrics per model.

    Scores reach `out/.parts/` batch by batch as the run goes (removed once the reports are written);
    `resume` continues an interrupted run from there, if it was started with the same settings. `figures` and
    `intervals` False leave out the figures and the metrics' bootstrap intervals (`write_reports`). A run with
    no progress for `stall_s` seconds (None: no limit) stops with a RunStalledError (`pneumo.batch.watchdog`;
    `hard_exit` as there).
    """
    from tqdm import tqdm

    with Watchdog(stall_s, str(folder), hard_exit=hard_exit) as watchdog:
        watchdog.begin(listing=None)
        files = discover(folder, shard)
        if not files:
            raise nothing_to_score(folder, shard)
        names = unique_names(predictors)
        parts = start_parts(out, run_settings(str(Path(folder).resolve()), shard, batch_size, threshold,
                                              predictors), resume)
        all_predictions, skipped_frames, scored = {}, [], {}
        for name, predictor in zip(names, predictors):
            with tqdm(total=len(files), desc=name, unit="img", disable=not show_progress) as bar:
                scores = ensemble_file_scores(predictor, scored)
                if scores is None:
                    scores = file_scores(predictor, files, batch_size, bar.update, parts / name, watchdog)
                else:
                    bar.update(len(files))
            scored[id(predictor)] = scores
            threshold_used = predictor.threshold if threshold is None else float(threshold)
            all_predictions[name], skipped = predictions_and_skipped(predictor, files, scores, threshold_used)
            skipped_frames.append(skipped)
        watchdog.begin()  # the reports are written at their own pace
    all_metrics = write_reports(out, folder, shard, predictors, all_predictions, skipped_frames, heatmaps,
                                figures=figures, intervals=intervals, show_progress=show_progress)
    shutil.rmtree(parts, ignore_errors=True)
    return all_metrics


# What a run writes directly under --out, beside a folder per model (named in its run.json).
RUN_OUTPUTS = (RUN_FILE, PARTS_FOLDER, "comparison.csv", "comparison.png", "disagreements.csv", "skipped.csv")


def claim_out(out, resume: bool = False, overwrite: bool = False) -> None:
    """Make sure a run never mixes its reports with another's: an `out` that holds another run's (its run.json,
    or an interrupted run's scores) is refused, unless `resume` (continue an interrupted run, pneumo's checks
    then compare its settings) or `overwrite` (first remove what that run wrote, and nothing else)."""
    out = Path(out)
    finished, started = out / RUN_FILE, out / PARTS_FOLDER / RUN_FILE
    if not (finished.exists() or started.exists()) or (resume and not overwrite):
        return
    if not overwrite:
        raise DataFolderError(f"{out}: holds the reports of another run; choose a new --out, --resume to continue "
                              "an interrupted run there, or --overwrite to replace it")
    names = set()
    for path in (finished, started):
        if path.exists():
            names |= set(json.loads(path.read_text()).get("models") or {})
    for name in sorted(names):
        if folder_name(name) == name:  # a name batch_eval.py writes, never a path out of `out`
            shutil.rmtree(out / name, ignore_errors=True)
    for entry in RUN_OUTPUTS:
        path = out / entry
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_settings(folder: str, shard: tuple[int, int], batch_size: int, threshold: float | None,
                 predictors) -> dict:
    """What a run must be resumed with: the folder (an absolute path, or a URI), shard, batch size, threshold and
    models."""
    records = {name: model_record(predictor) for name, predictor in zip(unique_names(predictors), predictors)}
    return {"folder": folder, "shard": list(shard), "batch_size": batch_size, "threshold": threshold,
            "models": records}


def start_parts(out, settings: dict, resume: bool) -> Path:
    """The folder under `out` that a run's scores reach batch by batch (`file_scores`), holding the run's
    `settings`: with `resume`, what an interrupted run started there with the same settings left (one started
    with others is refused), else an empty one."""
    parts = Path(out) / PARTS_FOLDER
    if resume and (parts / RUN_FILE).exists():
        started = json.loads((parts / RUN_FILE).read_text())
        if started != settings:
            changed = ", ".join(key for key in settings if started.get(key) != settings[key])
            raise DataFolderError(f"{out}: the interrupted run there was started with another {changed}; resume "
                                  "it with the same command, or score into another --out")
    else:
        shutil.rmtree(parts, ignore_errors=True)  # a new run: what an earlier one left is not ours
        write_json(parts / RUN_FILE, settings)
    return parts


def nothing_to_score(folder, shard: tuple[int, int]) -> NothingToScoreError:
    return NothingToScoreError(f"{folder}: no files to score" + (f" in shard {shard[0]}/{shard[1]}" if shard[1] > 1 else ""))


def write_reports(out, folder, shard: tuple[int, int], predictors, all_predictions: dict[str, pd.DataFrame],
                  skipped_frames: list[pd.DataFrame], heatmaps: int = 0, *, figures: bool = True,
                  intervals: bool = True, show_progress: bool = False) -> dict[str, dict]:
    """Every report of a scored folder from each model's predictions and skipped tables (keyed and ordered
    like `predictors`), with heatmaps of each model's `heatmaps` most confident mistakes; returns metrics per
    model. `figures` False leaves out the PNG figures, `intervals` False the metrics' 95% bootstrap intervals
    (the two costly reports; every table stays). With `show_progress`, a bar counts the steps (seconds each
    with figures and intervals). Both engines end here: this module's and pneumo.batch.ray_engine's."""
    from tqdm import tqdm

    names = list(all_predictions)
    records = {name: model_record(predictor) for name, predictor in zip(names, predictors)}
    skipped = pd.concat(skipped_frames).drop_duplicates("file")
    steps = len(names) * (2 if heatmaps else 1) + 1
    with tqdm(total=steps, desc="reports", unit="step", disable=not show_progress) as bar:
        all_metrics = {}
        for name in names:
            bar.set_postfix_str(name)
            all_metrics[name] = write_model_reports(out, name, all_predictions[name], len(skipped), records[name],
                                                    figures=figures, intervals=intervals)
            bar.update()
        bar.set_postfix_str("comparison")
        write_run_reports(out, all_predictions, all_metrics, skipped, figures=figures)
        write_json(Path(out) / RUN_FILE, {"folder": str(folder), "shard": list(shard), "models": records})
        bar.update()
        if heatmaps:
            for name, predictor in zip(names, predictors):
                bar.set_postfix_str(f"{name} heatmaps")
                write_confident_mistakes(Path(out) / name / HEATMAPS_FOLDER, predictor, all_predictions[name],
                                         folder, heatmaps)
                bar.update()
    return all_metrics


def read_run(folder) -> dict:
    path = Path(folder) / RUN_FILE
    if not path.exists():
        raise DataFolderError(f"{folder}: not a batch_eval output folder (no {RUN_FILE})")
    return json.loads(path.read_text())


def merge_runs(run_folders, out, *, figures: bool = True, intervals: bool = True) -> dict[str, dict]:
    """Combine the outputs of sharded runs and recompute every report as if one run had scored it all
    (`figures` and `intervals` as in `write_reports`)."""
    runs = [read_run(folder) for folder in run_folders]
    names = list(runs[0]["models"])
    unsafe = [name for name in names if folder_name(name) != name]
    if unsafe:
        raise DataFolderError(f"{run_folders[0]}: {RUN_FILE} names models {', '.join(map(repr, unsafe))}, which are "
                              "not folder names batch_eval.py writes")
    if any(list(run["models"]) != names for run in runs):
        raise DataFolderError("the runs to merge were scored with different models: "
                              + "; ".join(f"{folder}: {', '.join(run['models'])}" for folder, run in zip(run_folders, runs)))
    read = {"keep_default_na": False, "float_precision": "round_trip"}

    def table(folder, name):
        path = Path(folder) / name
        if not path.exists():
            raise DataFolderError(f"{folder}: incomplete batch_eval output folder ({name} is missing)")
        return pd.read_csv(path, **read)

    all_predictions = {name: pd.concat([table(f, f"{name}/predictions.csv") for f in run_folders]) for name in names}
    skipped = pd.concat([table(f, "skipped.csv") for f in run_folders]).drop_duplicates("file")
    all_metrics = {name: write_model_reports(out, name, all_predictions[name], len(skipped), runs[0]["models"][name],
                                             figures=figures, intervals=intervals)
                   for name in names}
    write_run_reports(out, all_predictions, all_metrics, skipped, figures=figures)
    write_json(Path(out) / RUN_FILE, {"folder": runs[0]["folder"], "merged_from": [str(f) for f in run_folders],
                                      "models": runs[0]["models"]})
    return all_metrics


def write_confident_mistakes(folder: Path, predictor, predictions: pd.DataFrame, root, count: int) -> None:
    """Heatmaps (the model's own method: Grad-CAM or integrated gradients) of the `count` mistakes the model was
    most sure of, drawn as the demo draws them, each titled (model, file, true and decided label, probability,
    method) with its colour scale or, where the map is empty, the demo's note; and an index of them."""
    from ..plots import plot_heatmap

    probability = probability_column(predictor.positive_class)
    labeled = labeled_part(predictions, predictor.class_names)
    mistakes = labeled[labeled.true_label != labeled.predicted_label].copy()
    mistakes["confidence"] = np.where(mistakes.predicted_label == predictor.positive_class, mistakes[probability],
                                      1 - mistakes[probability])
    mistakes = mistakes.sort_values(["confidence", "file"], ascending=[False, True]).head(count)
    images, notes = [], []
    for rank, (_, row) in enumerate(mistakes.iterrows(), start=1):
        result, overlay = analyse(predictor, Path(root) / row.file, row.predicted_label)
        name = f"{rank:02d}_{Path(row.file).stem}.png"
        title = (f"{predictor.display_name}: {row.file}\ntrue {row.true_label}, decided {row.predicted_label} "
                 f"(P({predictor.positive_class}) {row[probability]:.3f}); "
                 f"{result['heatmap_method']} of {result['explained_class']}")
        plot_heatmap(overlay, title, result["heatmap_note"], folder / name)
        images.append(name)
        notes.append(result["heatmap_note"] or "")
    write_csv(folder / "index.csv", mistakes.assign(overlay=images, heatmap_method=predictor.explanation_method,
                                                    heatmap_note=notes))
