"""Datasets: image-folder discovery, the patient-level validation split and the tf.data pipeline."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataFolderError
from .formats import SUPPORTED_SUFFIXES
from .imaging import DECODER_SCALE, Preprocessing

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

    Stratified by label and reproducible for a given seed.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    folds = StratifiedGroupKFold(n_splits=round(1 / validation_fraction), shuffle=True, random_state=seed)
    train_index, validation_index = next(folds.split(frame, frame["label"], _leakage_groups(frame)))
    return frame.iloc[train_index].reset_index(drop=True), frame.iloc[validation_index].reset_index(drop=True)


def class_weights(labels) -> dict[int, float]:
    """Weights that make each class count equally in the loss (scikit-learn's "balanced": n / (k * n_class))."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels)
    present = np.unique(labels)
    return {int(label): float(weight)
            for label, weight in zip(present, compute_class_weight("balanced", classes=present, y=labels))}


def loaded_images(paths, load, shape, tolerate: type[Exception] | None = None):
    """A tf.data.Dataset of `load(path)` (a float32 array of `shape`) for each path, decoded in parallel, in order.

    With `tolerate`, each element is (array, error message): a file whose `load` raises that exception
    gives zeros and the message instead of stopping the whole pipeline.
    """
    import tensorflow as tf

    def load_path(path):
        path = path.decode()
        if tolerate is None:
            return load(path)
        try:
            return load(path), b""
        except tolerate as error:
            return np.zeros([d or 1 for d in shape], np.float32), str(error).encode()

    def as_tensors(path):
        if tolerate is None:
            array = tf.numpy_function(load_path, [path], tf.float32, stateful=False)
            array.set_shape(shape)
            return array
        array, error = tf.numpy_function(load_path, [path], (tf.float32, tf.string), stateful=False)
        array.set_shape(shape)
        return array, error

    return (tf.data.Dataset.from_tensor_slices([str(path) for path in paths])
            .map(as_tensors, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def make_dataset(paths, labels, height: int, width: int, batch_size: int = 32, *,
                 preprocessing: Preprocessing = DECODER_SCALE, shuffle_seed=None, augment: bool = False,
                 cache: bool = True, num_classes: int | None = None):
    """A batched tf.data pipeline of (model input, label) through the one image path.

    Decoding runs in parallel and is cached after the first pass. With `augment`, the decoded planes are
    cached and every epoch draws a new acquisition of each (`perturbations.random_acquisition`) before the
    model's own preprocessing, so training sees exactly what inference would make of that image.
    `num_classes` turns the labels one-hot (needed for label smoothing).
    """
    import tensorflow as tf

    from .imaging import read_grayscale
    from .perturbations import random_acquisition

    def model_input(gray):
        return preprocessing.model_input(gray, height, width)

    def acquire(gray, seed):
        return model_input(random_acquisition(gray, np.random.default_rng(int(seed))))

    labels = np.asarray(labels, dtype=np.int32)
    if num_classes:
        labels = np.eye(num_classes, dtype=np.float32)[labels]
    if augment:
        images = loaded_images(paths, read_grayscale, (None, None))
    else:
        images = loaded_images(paths, lambda path: model_input(read_grayscale(path)), (height, width, 3))
    dataset = tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices(labels))
    if cache:
        dataset = dataset.cache()
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    if augment:
        def acquired(gray, seed):
            image = tf.numpy_function(acquire, [gray, seed], tf.float32, stateful=False)
            image.set_shape((height, width, 3))
            return image

        seeds = tf.data.Dataset.random(seed=shuffle_seed or 0, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(lambda item, seed: (acquired(item[0], seed), item[1]),
                                                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


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
