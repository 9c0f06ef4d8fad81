"""Datasets: image-folder discovery, the patient-level validation split and the tf.data pipeline."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .imaging import load_model_input

CLASS_NAMES = ("NORMAL", "PNEUMONIA")
POSITIVE_CLASS = "PNEUMONIA"
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}

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


def list_labeled_images(folder: str | Path) -> pd.DataFrame:
    """Every image under `folder/NORMAL` and `folder/PNEUMONIA` (any case, recursive).

    Columns: path, label (index into CLASS_NAMES), class_name, patient.
    """
    rows = []
    for label, class_name in enumerate(CLASS_NAMES):
        class_dir = find_subfolder(Path(folder), class_name)
        if class_dir is None:
            continue
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                rows.append((str(path), label, class_name, patient_id_from_filename(path.name)))
    frame = pd.DataFrame(rows, columns=["path", "label", "class_name", "patient"])
    if frame.empty:
        raise FileNotFoundError(f"{folder}: no images under NORMAL/ or PNEUMONIA/ subfolders")
    return frame


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
    """Weights that make each class count equally in the loss (n / (k * n_class))."""
    counts = np.bincount(np.asarray(labels), minlength=len(CLASS_NAMES))
    return {label: float(len(labels) / (len(counts) * count)) for label, count in enumerate(counts) if count}


AUGMENTATION_SUMMARY = "rotation +-10 deg, zoom +-10%, shift +-8%, brightness +-10%, contrast +-15%; no flips"


def augmentation_layers(seed: int = 42):
    """Small geometric and exposure changes a real radiograph could show.

    No flips: the heart sits on the left, and a mirrored chest is an anatomy the model never meets.
    """
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomRotation(10 / 360, fill_mode="constant", seed=seed),
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=seed + 2),
            keras.layers.RandomBrightness(0.1, value_range=(0.0, 1.0), seed=seed + 3),
            keras.layers.RandomContrast(0.15, value_range=(0.0, 1.0), seed=seed + 4),
        ],
        name="augmentation",
    )


def make_dataset(paths, labels, height: int, width: int, batch_size: int = 32, *, shuffle_seed=None,
                 augment: bool = False, cache: bool = True):
    """A batched tf.data pipeline of (image, label) through `load_model_input`.

    Decoding runs in parallel and is cached after the first pass; augmentation (when asked) runs on
    whole batches after the cache, so each epoch sees new variations.
    """
    import tensorflow as tf

    def decode(path):
        return load_model_input(path.decode(), height, width)

    def load(path, label):
        image = tf.numpy_function(decode, [path], tf.float32, stateful=False)
        image.set_shape((height, width, 3))
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices((list(map(str, paths)), np.asarray(labels, dtype=np.int32)))
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        dataset = dataset.cache()
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augment:
        augmenter = augmentation_layers(shuffle_seed or 0)
        dataset = dataset.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
