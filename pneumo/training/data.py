"""Datasets: image-folder discovery, the patient-level validation split, the decoding of folders for scoring and
the training batches (any Keras backend)."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataFolderError, InvalidImageError
from ..formats import SUPPORTED_SUFFIXES
from ..imaging.decoding import DECODER_SCALE, Preprocessing, decode_many_for_model, load_model_input
from .perturbations import as_another_file, random_acquisition

CLASS_NAMES = ("NORMAL", "PNEUMONIA")
POSITIVE_CLASS = "PNEUMONIA"

# person1000_bacteria_2931.jpeg -> person1000; IM-0115-0001.jpeg -> IM-0115;
# NORMAL2-IM-1427-0001.jpeg -> NORMAL2-IM-1427 (the last "-NNNN" is the image number).
_PERSON = re.compile(r"^(person\d+)_", re.IGNORECASE)
_IMAGE_NUMBER = re.compile(r"^(.+)-\d+$")


def patient_id_from_filename(filename: str) -> str:
    stem = Path(filename).stem
    match = _PERSON.match(stem) or _IMAGE_NUMBER.match(stem)
    return match.group(1) if match else stem


def find_subfolder(parent: Path, name: str) -> Path | None:
    """`parent/name`, matching the name case-insensitively."""
    for child in sorted(Path(parent).iterdir()):
        if child.is_dir() and child.name.lower() == name.lower():
            return child
    return None


def label_from_folders(relative: Path, class_names=CLASS_NAMES) -> str | None:
    """The class named by the nearest enclosing folder (any case): test/normal/x.png -> NORMAL.

    The one rule for a labeled folder, for training data and for scored folders alike.
    """
    by_lower = {name.lower(): name for name in class_names}
    for part in reversed(Path(relative).parts[:-1]):
        if part.lower() in by_lower:
            return by_lower[part.lower()]
    return None


def list_labeled_images(folder: str | Path, class_names=CLASS_NAMES) -> pd.DataFrame:
    """Every image file under `folder` whose nearest class-named folder gives its label (any case, any depth).

    Columns: path, label (index into `class_names`), class_name, patient.
    """
    folder = Path(folder)
    rows = []
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if not path.is_file() or path.suffix.lower() not in SUPPORTED_SUFFIXES:
            continue
        class_name = label_from_folders(path.relative_to(folder), class_names)
        if class_name is not None:
            rows.append((str(path), class_names.index(class_name), class_name, patient_id_from_filename(path.name)))
    frame = pd.DataFrame(rows, columns=["path", "label", "class_name", "patient"])
    if frame.empty:
        raise DataFolderError(f"{folder}: no images under class folders ({', '.join(class_names)})")
    return frame.sort_values(["label", "path"], kind="stable").reset_index(drop=True)


def find_splits(root: str | Path) -> dict[str, Path]:
    """The `train`, `val` and `test` folders present under `root` (case-insensitive)."""
    found = {}
    for split in ("train", "val", "test"):
        folder = find_subfolder(Path(root), split)
        if folder is not None:
            found[split] = folder
    return found


def _leakage_groups(frame: pd.DataFrame) -> np.ndarray:
    """Group per image: same patient, or byte-identical files, land in the same group.

    The group is named by a patient id (a string), never by Python's `hash()`, which changes with every
    interpreter (PYTHONHASHSEED) and would give another split for the same seed in every process.
    """
    parent = {}

    def root(key):
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for path, patient in zip(frame["path"], frame["patient"]):
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        parent[root(("sha", digest))] = root(("patient", patient))
    return np.array([root(("patient", p))[1] for p in frame["patient"]])


def split_by_patient(frame: pd.DataFrame, validation_fraction: float = 0.15, seed: int = 42):
    """Split images into (train, validation) so that no patient (nor duplicate file) is on both sides.

    Stratified by label and reproducible for a given seed. The patients are dealt into k stratified groups
    of about equal size (scikit-learn's StratifiedGroupKFold, shuffled by `seed`) and the first m of them are
    the validation side, m / k being a share within 0.01 of `validation_fraction` with the fewest groups (see
    `validation_folds`): 0.15 is 1 of 7 groups (14.3%, the split every bundled model was trained on), 0.4 is
    2 of 5 and 0.7 is 7 of 10. The share is counted in patients; in images it is as close when patients have
    similar numbers of images.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    check_fraction(validation_fraction, "validation_fraction")
    groups = _leakage_groups(frame)
    if len(set(groups)) < 2:
        raise DataFolderError(f"{len(set(groups))} patient(s): a patient-level split needs at least two")
    held_out, count = validation_folds(validation_fraction, len(set(groups)))
    folds = StratifiedGroupKFold(n_splits=count, shuffle=True, random_state=seed)
    folds = folds.split(frame, frame["label"], groups)
    validation_index = np.sort(np.concatenate([fold for _, fold in itertools.islice(folds, held_out)]))
    train_index = np.setdiff1d(np.arange(len(frame)), validation_index)
    if not len(train_index) or not len(validation_index):
        raise DataFolderError(f"{len(set(groups))} patients cannot be split {validation_fraction:.0%} / "
                              f"{1 - validation_fraction:.0%}; label more patients")
    return frame.iloc[train_index].reset_index(drop=True), frame.iloc[validation_index].reset_index(drop=True)


def check_fraction(fraction: float, name: str = "fraction") -> float:
    """`fraction` when it is a share strictly between 0 and 1, else a ValueError that says so."""
    if not 0 < fraction < 1:
        raise ValueError(f"{name} must be between 0 and 1 (both excluded), not {fraction}")
    return fraction


def validation_folds(fraction: float, most_folds: int) -> tuple[int, int]:
    """(m, k): hold out m of k equal groups of patients, m / k within 0.01 (and within a tenth of the smaller
    side's share) of `fraction`, with the fewest groups that get there; the closest share when no k up to
    `most_folds` (the number of patients) gets there.

    The fewest groups, so that a fraction near 1/k is one group of k, as pneumo has always split it: 0.15 is
    1 of 7, 0.25 is 1 of 4, 0.1 is 1 of 10.
    """
    check_fraction(fraction)
    tolerance = min(0.01, min(fraction, 1 - fraction) / 10)
    best = None
    for count in range(2, max(most_folds, 2) + 1):
        held_out = min(max(round(fraction * count), 1), count - 1)
        error = abs(held_out / count - fraction)
        if error <= tolerance:
            return held_out, count
        if best is None or error < best[0]:
            best = (error, held_out, count)
    return best[1], best[2]


def class_weights(labels) -> dict[int, float]:
    """Weights that make each class count equally in the loss (scikit-learn's "balanced": n / (k * n_class))."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels)
    present = np.unique(labels)
    return {int(label): float(weight)
            for label, weight in zip(present, compute_class_weight("balanced", classes=present, y=labels))}


def readable_batches(paths, load, shape, batch_size: int = 32, workers: int | None = None):
    """The files in `paths` that `load` reads (each as a float32 array of `shape`), `batch_size` files at a time and
    in order: for each batch, (the arrays of its readable files, their positions in `paths`, why each of the others
    is unreadable, in order).

    Files are decoded on a pool of `workers` threads (default: one per CPU; libjpeg, OpenCV and numpy release the
    GIL), straight into the batch's array, and the next batch is decoded while the caller works on this one: at
    most two batches are in memory.
    """
    from concurrent.futures import ThreadPoolExecutor

    paths = list(paths)

    def decode_into(batch, row, path):
        try:
            batch[row] = load(path)
            return ""
        except InvalidImageError as error:
            return str(error)

    pool = ThreadPoolExecutor(workers or os.cpu_count() or 1)

    def decode(start):
        chunk = paths[start:start + batch_size]
        batch = aligned_empty((len(chunk), *shape))
        return batch, [pool.submit(decode_into, batch, row, path) for row, path in enumerate(chunk)]

    try:
        pending = decode(0)
        for start in range(0, len(paths), batch_size):
            batch, futures = pending
            errors = [future.result() for future in futures]
            pending = decode(start + batch_size)
            readable = np.flatnonzero([not error for error in errors])
            yield (batch if len(readable) == len(batch) else batch[readable]), start + readable, [e for e in errors if e]
    finally:
        # Without waiting: a caller stopped (a stalled run, pneumo.batch.watchdog) is not held by a read that hangs.
        pool.shutdown(wait=False, cancel_futures=True)


def aligned_empty(shape, alignment: int = 64) -> np.ndarray:
    """An uninitialised float32 array whose data starts on an `alignment`-byte boundary: TensorFlow takes such an
    array as its tensor without a copy (it copies numpy's usual 16-byte-aligned one, 10 ms for a batch of 32)."""
    size = int(np.prod(shape)) * 4
    raw = np.empty(size + alignment, np.uint8)
    offset = -raw.ctypes.data % alignment
    return raw[offset:offset + size].view(np.float32).reshape(shape)


def training_batches(paths, labels, size: int, batch_size: int = 32, *, preprocessing: Preprocessing = DECODER_SCALE,
                     seed: int = 0, num_classes: int | None = None, first_epoch: int = 0, workers: int | None = None,
                     encoding_pairs: bool = False):
    """The training data: a keras.utils.PyDataset of (model input, label) batches, so the same recipe runs
    on TensorFlow, JAX or PyTorch (the GPU machines carry no TensorFlow).

    Every image is decoded once; each epoch shuffles them and draws a new acquisition of each
    (`perturbations.random_acquisition`) before the model's own preprocessing, so training sees exactly
    what inference would make of that image. The draw depends only on (seed, epoch, image), not on which
    worker thread makes the batch: a run resumed at `first_epoch` sees the batches an uninterrupted one
    would. `num_classes` turns the labels one-hot (needed for label smoothing).

    With `encoding_pairs`, each acquisition is followed in its batch by the same picture saved as another file
    and read back through the model's decoding (`perturbations.as_another_file`), for a loss that asks both to
    score alike (`losses.ConsistentCrossEntropy`): a batch holds batch_size // 2 pairs.
    """
    import os

    import keras

    labels = np.asarray(labels, dtype=np.int32)
    if num_classes:
        labels = np.eye(num_classes, dtype=np.float32)[labels]
    grays = decode_many_for_model(paths, size, size)
    per_batch = max(batch_size // 2, 1) if encoding_pairs else batch_size

    def inputs(i: int, rng: np.random.Generator) -> list[np.ndarray]:
        acquisition = random_acquisition(grays[i], rng)
        images = [preprocessing.model_input(acquisition, size, size)]
        if encoding_pairs:
            images.append(load_model_input(as_another_file(acquisition, rng), size, size, preprocessing))
        return images

    class TrainingBatches(keras.utils.PyDataset):
        def __init__(self):
            # Threads: OpenCV and NumPy release the GIL for the heavy parts of an acquisition.
            super().__init__(workers=workers or os.cpu_count() or 1, use_multiprocessing=False)
            self.epoch = first_epoch
            self._shuffle()

        def _shuffle(self):
            self.order = np.random.default_rng([seed, self.epoch]).permutation(len(grays))

        def __len__(self):
            return -(-len(grays) // per_batch)

        def __getitem__(self, index):
            chosen = self.order[index * per_batch:(index + 1) * per_batch]
            images = [image for i in chosen for image in inputs(i, np.random.default_rng([seed, self.epoch, int(i)]))]
            return np.stack(images), labels[np.repeat(chosen, len(images) // len(chosen))]

        def on_epoch_end(self):
            self.epoch += 1
            self._shuffle()

    return TrainingBatches()


# Running numbers in the file names follow the order of acquisition within each series
# (person1000_..., IM-0115-..., NORMAL2-IM-1427-...): a patient id is a series prefix and a number.
_SERIES_AND_NUMBER = re.compile(r"^(.*?)(\d+)$")


def series_and_number(patient: str) -> tuple[str, int] | None:
    """("person", 1000) for person1000, ("IM-", 115) for IM-0115; None when the id holds no number."""
    match = _SERIES_AND_NUMBER.match(patient)
    return (match.group(1), int(match.group(2))) if match else None


def earliest_acquisitions(frame: pd.DataFrame, fraction: float = 0.1) -> pd.Series:
    """Which images belong to the `fraction` of patients with the lowest running numbers of each series.

    A second hold-out that stands for "X-rays from another period": closer to a new site's images than
    a random patient split, whose patients were X-rayed in the same weeks as the training patients.
    Patients are taken whole, and so is any group of byte-identical files (see `_leakage_groups`).
    """
    groups = pd.Series(_leakage_groups(frame), index=frame.index)
    keyed = {}
    for patient in dict.fromkeys(groups):
        parsed = series_and_number(patient)
        if parsed:
            keyed.setdefault(parsed[0], []).append((parsed[1], patient))
    chosen = set()
    for members in keyed.values():
        members.sort()
        chosen.update(patient for _, patient in members[:round(len(members) * fraction)])
    return groups.isin(chosen)


def subgroup_of(filename: str) -> str:
    """The subgroup a file name reveals: bacterial or viral pneumonia, or the acquisition series of a
    normal X-ray (`NORMAL2-IM-*` vs `IM-*`); "other" for names without such a mark."""
    name = Path(filename).name.lower()
    for mark, subgroup in (("bacteria", "pneumonia: bacterial"), ("virus", "pneumonia: viral"),
                           ("normal2-im-", "normal: NORMAL2-IM series"), ("im-", "normal: IM series")):
        if mark in name:
            return subgroup
    return "other"
