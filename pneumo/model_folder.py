"""The model folder: what a trained model is on disk, laid out like a Hugging Face Hub model repo.

    models/NAME/
      model.keras               the network (Keras 3; loads with safe_mode=True)
      config.json               everything needed to use it: input size, preprocessing, class names,
                                operating points, calibration, Grad-CAM layer, how it was trained
      README.md                 the model card
      metrics_validation.json   metrics on the patient-level validation split (and the hold-out's)
      metrics_test.json         metrics on the official test set, scored once
      metrics_robustness.csv    the validation split under acquisition perturbations
      test_scorings.csv         every scoring of the test set: date, model file hash, metrics
      history.csv, training_curves.png, data_split.csv
      checkpoints/              training state (local only: never published)

This module owns those names, reads and validates config.json, and writes the folder's files
atomically. Training, export and evaluation write through it; the predictor, the Hub code, the model
card and the demo read through it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from fnmatch import fnmatch
from pathlib import Path

from .errors import ModelLoadError, ModelNotFoundError
from .files import write_json

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
CARD_FILE = "README.md"
HISTORY_FILE = "history.csv"
CURVES_FILE = "training_curves.png"
SPLIT_FILE = "data_split.csv"
ROBUSTNESS_FILE = "metrics_robustness.csv"
SCORING_LOG = "test_scorings.csv"
CHECKPOINTS = "checkpoints"
TRAIN_ARGS_FILE = "train_args.json"
METRICS_SPLITS = ("validation", "test")
# The parts of data_split.csv.
TRAIN_SPLIT, VALIDATION_SPLIT, HOLDOUT_SPLIT = "train", "validation", "holdout_earliest"

REQUIRED_CONFIG_KEYS = ("architecture", "model_file", "input", "class_names", "positive_class", "threshold",
                        "calibration", "gradcam_layer")
# What a Hub download fetches to use a model, and what a push publishes to document it.
DOWNLOADED_FILES = [CONFIG_FILE, "*.keras", CARD_FILE, "metrics_*.json"]
PUBLISHED_FILES = [*DOWNLOADED_FILES, ROBUSTNESS_FILE, SCORING_LOG, HISTORY_FILE, CURVES_FILE, SPLIT_FILE]
REQUIRED_FOR_PUBLISHING = [CONFIG_FILE, "metrics_validation.json"]


def read_config(folder) -> dict:
    """config.json of a model folder, checked to hold what using the model needs."""
    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        raise ModelLoadError(f"{folder}: no {CONFIG_FILE}; a pneumo model folder needs one (see models/*/config.json)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{path}: not valid JSON ({error})") from None
    missing = [key for key in REQUIRED_CONFIG_KEYS if key not in config]
    if missing:
        raise ModelLoadError(f"{path}: not a pneumo model config (missing {', '.join(missing)})")
    if config["positive_class"] not in config["class_names"]:
        raise ModelLoadError(f"{path}: positive_class {config['positive_class']!r} is not among class_names")
    return config


def write_config(folder, config: dict) -> None:
    write_json(Path(folder) / CONFIG_FILE, config)


def metrics_path(folder, split: str) -> Path:
    return Path(folder) / f"metrics_{split}.json"


def read_metrics(folder, split: str) -> dict | None:
    path = metrics_path(folder, split)
    return json.loads(path.read_text()) if path.exists() else None


def read_all_metrics(folder) -> dict[str, dict]:
    """{split: metrics} for the splits the folder has metrics of, validation first."""
    return {split: metrics for split in METRICS_SPLITS if (metrics := read_metrics(folder, split)) is not None}


def write_metrics(folder, split: str, metrics: dict) -> None:
    write_json(metrics_path(folder, split), metrics)


def model_file_sha256(folder, config: dict | None = None) -> str:
    config = config or read_config(folder)
    return hashlib.sha256((Path(folder) / config["model_file"]).read_bytes()).hexdigest()


def log_test_scoring(folder, metrics: dict, data: str, when: dt.datetime | None = None) -> None:
    """Append one scoring of the test set to the folder's log, with the hash of the model file it scored."""
    import pandas as pd

    from .files import write_csv

    folder = Path(folder)
    row = {"date": (when or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="seconds"),
           "model_sha256": model_file_sha256(folder), "data": data,
           **{key: metrics.get(key) for key in ("n_images", "threshold", "accuracy", "sensitivity", "specificity",
                                                 "roc_auc", "expected_calibration_error")}}
    log_path = folder / SCORING_LOG
    log = pd.read_csv(log_path) if log_path.exists() else pd.DataFrame()
    write_csv(log_path, pd.concat([log, pd.DataFrame([row])], ignore_index=True))


def files_to_publish(folder) -> list[Path]:
    """The folder's files that a push uploads, after checking it is a complete pneumo model folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelNotFoundError(f"{folder}: no such model folder")
    config = read_config(folder)
    missing = [name for name in [*REQUIRED_FOR_PUBLISHING, config["model_file"]] if not (folder / name).exists()]
    if missing:
        raise ModelLoadError(f"{folder}: cannot publish, missing {', '.join(missing)}")
    return sorted(path for path in folder.iterdir()
                  if path.is_file() and any(fnmatch(path.name, pattern) for pattern in PUBLISHED_FILES))
