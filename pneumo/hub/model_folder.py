"""The model folder: what a trained model is on disk, laid out like a Hugging Face Hub model repo.

    models/NAME/
      config.json, metadata.json, model.weights.h5
                                the network in Keras 3's own directory format, so that
                                keras.saving.load_model("hf://OWNER/NAME") works on a published repo
      pneumo.json               everything else needed to use it: input size, preprocessing, class
                                names, operating points, calibration, explanation method, how it was trained
      ood_reference.npz         the training X-rays' feature distribution (pneumo.prediction.ood)
      README.md                 the model card
      metrics_validation.json   metrics on the patient-level validation split (and the hold-out's)
      metrics_test.json         metrics on the official test set, scored once
      metrics_site_holdout.json a site refit's hold-out (pneumo.site.refit), before and after
      metrics_robustness.csv    the validation split under acquisition perturbations
      test_scorings.csv         every scoring of the test set: date, model file hash, metrics
      site_eval_test.json       the test set as a new site: adapted and refitted, cross-fitted (pneumo.site.site_eval)
      history.csv, training_curves.png, data_split.csv
      checkpoints/              training state (local only: never published)

pneumo 0.1 folders (the legacy layout: pneumo's metadata in config.json, the network in model.keras)
still load; `pneumo model-folder upgrade FOLDER` rewrites one in today's layout.

This module owns those names, reads and validates pneumo.json, and writes the folder's files
atomically. Training, export and evaluation write through it; the predictor, the Hub code, the model
card and the demo read through it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from fnmatch import fnmatch
from pathlib import Path

from ..explain import methods
from ..cli import command
from ..errors import ModelLoadError, ModelNotFoundError
from ..files import atomic_write, write_csv, write_json

CONFIG_FILE = "pneumo.json"
# An ensemble folder's pneumo.json has "kind": "ensemble" (pneumo.training.ensemble): members, no network of its own.
ENSEMBLE_KIND = "ensemble"
# The network, as Keras writes a model to a directory (model.save(folder, zipped=False)).
KERAS_CONFIG_FILE, KERAS_METADATA_FILE, WEIGHTS_FILE = "config.json", "metadata.json", "model.weights.h5"
NETWORK_FILES = (KERAS_CONFIG_FILE, KERAS_METADATA_FILE, WEIGHTS_FILE)
# pneumo 0.1's layout: the metadata in config.json, naming the network file (model.keras) in "model_file".
LEGACY_CONFIG_FILE, LEGACY_MODEL_FILE = "config.json", "model.keras"
CARD_FILE = "README.md"
HISTORY_FILE = "history.csv"
CURVES_FILE = "training_curves.png"
SPLIT_FILE = "data_split.csv"
ROBUSTNESS_FILE = "metrics_robustness.csv"
OOD_REFERENCE_FILE = "ood_reference.npz"
SCORING_LOG = "test_scorings.csv"
SITE_EVAL_FILE = "site_eval_test.json"  # pneumo site-eval --record: the official test set, by prevalence
CHECKPOINTS = "checkpoints"
TRAIN_ARGS_FILE = "train_args.json"
# validation and test; site_holdout in a folder refitted to a site's own data (pneumo.site.refit).
SITE_HOLDOUT_SPLIT = "site_holdout"
METRICS_SPLITS = ("validation", SITE_HOLDOUT_SPLIT, "test")
# The parts of data_split.csv.
TRAIN_SPLIT, VALIDATION_SPLIT, HOLDOUT_SPLIT = "train", "validation", "holdout_earliest"

REQUIRED_CONFIG_KEYS = ("architecture", "input", "class_names", "positive_class", "threshold", "calibration")
# What a Hub download fetches to use a model (either layout), and what a push publishes to document it.
DOWNLOADED_FILES = [CONFIG_FILE, *NETWORK_FILES, LEGACY_MODEL_FILE, OOD_REFERENCE_FILE, CARD_FILE, "metrics_*.json"]
PUBLISHED_FILES = [*DOWNLOADED_FILES, ROBUSTNESS_FILE, SCORING_LOG, SITE_EVAL_FILE, HISTORY_FILE, CURVES_FILE, SPLIT_FILE]
REQUIRED_FOR_PUBLISHING = [CONFIG_FILE, *NETWORK_FILES, "metrics_validation.json"]


def is_legacy(folder) -> bool:
    """A pneumo 0.1 folder: pneumo's metadata in config.json, no pneumo.json and no Keras weights file."""
    folder = Path(folder)
    return (not (folder / CONFIG_FILE).exists() and not (folder / WEIGHTS_FILE).exists()
            and (folder / LEGACY_CONFIG_FILE).exists())


def is_ensemble(folder) -> bool:
    """Whether `folder` holds an ensemble's pneumo.json (rather than a single model's)."""
    try:
        return json.loads((Path(folder) / CONFIG_FILE).read_text()).get("kind") == ENSEMBLE_KIND
    except (OSError, ValueError, AttributeError):
        return False  # no or no valid pneumo.json: reading it as a single model's says what is wrong


def config_path(folder) -> Path:
    """Where the folder's pneumo metadata lives: pneumo.json, or config.json in a legacy folder."""
    return Path(folder) / (LEGACY_CONFIG_FILE if is_legacy(folder) else CONFIG_FILE)


def read_config(folder) -> dict:
    """The folder's pneumo metadata (pneumo.json, or a legacy config.json), checked to hold what using the
    model needs."""
    path = config_path(folder)
    if not path.exists():
        raise ModelLoadError(f"{folder}: no {CONFIG_FILE}; a pneumo model folder needs one (see models/*/{CONFIG_FILE})")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{path}: not valid JSON ({error})") from None
    if config.get("kind") == ENSEMBLE_KIND:
        raise ModelLoadError(f"{folder}: an ensemble of model folders, not a single model; pneumo.load_predictor "
                             "and batch_eval.py --model load it")
    required = (*REQUIRED_CONFIG_KEYS, "model_file") if path.name == LEGACY_CONFIG_FILE else REQUIRED_CONFIG_KEYS
    missing = [key for key in required if key not in config]
    if "explanation" not in config and "gradcam_layer" not in config:  # a pneumo 0.2 folder names only the latter
        missing.append("explanation")
    if missing:
        raise ModelLoadError(f"{path}: not a pneumo model config (missing {', '.join(missing)})")
    method = methods.settings(config).get("method")
    if method not in methods.METHODS:
        raise ModelLoadError(f"{path}: unknown explanation method {method!r} (pneumo knows "
                             f"{', '.join(methods.METHODS)})")
    if config["positive_class"] not in config["class_names"]:
        raise ModelLoadError(f"{path}: positive_class {config['positive_class']!r} is not among class_names")
    return config


def write_config(folder, config: dict) -> None:
    write_json(config_path(folder), config)


def network_files(folder, config: dict | None = None) -> list[Path]:
    """The files that hold the network: Keras' directory format, or a legacy folder's model.keras."""
    folder = Path(folder)
    if is_legacy(folder):
        return [folder / (config or read_config(folder))["model_file"]]
    return [folder / name for name in NETWORK_FILES]


def load_network(folder, config: dict | None = None):
    """The folder's Keras model, loaded with safe_mode=True, in either layout."""
    import keras

    folder = Path(folder)
    files = network_files(folder, config)
    missing = [path.name for path in files if not path.exists()]
    if missing:
        raise ModelLoadError(f"{folder}: the network's {', '.join(missing)} is missing")
    target = files[0] if is_legacy(folder) else folder
    try:
        return keras.saving.load_model(target, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a damaged or foreign file
        raise ModelLoadError(f"{target}: cannot be loaded as a Keras model ({error})") from None


def save_network(model, folder) -> None:
    """Write the network in Keras' directory format (config.json, metadata.json, model.weights.h5)."""
    folder = Path(folder)
    model.save(folder, zipped=False)
    assets = folder / "assets"
    if assets.is_dir() and not any(assets.iterdir()):
        assets.rmdir()  # Keras leaves an empty assets/ behind; none of our layers has assets


def upgrade(folder) -> bool:
    """Rewrite a legacy folder in today's layout (config.json -> pneumo.json, model.keras unpacked).
    Returns False when the folder is already in today's layout."""
    import zipfile

    folder = Path(folder)
    if not is_legacy(folder):
        return False
    config = read_config(folder)
    archive = folder / config.pop("model_file")
    with zipfile.ZipFile(archive) as keras_zip:
        members = {name: keras_zip.read(name) for name in NETWORK_FILES}
    write_json(folder / CONFIG_FILE, config)  # from here on the folder reads as today's layout
    for name, payload in members.items():
        atomic_write(folder / name, lambda temporary, payload=payload: Path(temporary).write_bytes(payload))
    archive.unlink()
    return True


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
    """SHA-256 of the network's files, in order (the graph and the weights; a legacy folder's model.keras). An
    ensemble's is its pneumo.json's: the members' hashes and its own calibration and threshold."""
    digest = hashlib.sha256()
    files = [Path(folder) / CONFIG_FILE] if is_ensemble(folder) else network_files(folder, config)
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def log_test_scoring(folder, metrics: dict, data: str, when: dt.datetime | None = None) -> None:
    """Append one scoring of the test set to the folder's log, with the hash of the model file it scored."""
    import pandas as pd

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
    if is_legacy(folder):
        raise ModelLoadError(f"{folder}: a pneumo 0.1 folder (config.json + model.keras), which Keras' hf:// loader "
                             f"cannot read; run `pneumo model-folder upgrade {folder}` first")
    read_config(folder)
    missing = [name for name in REQUIRED_FOR_PUBLISHING if not (folder / name).exists()]
    if missing:
        raise ModelLoadError(f"{folder}: cannot publish, missing {', '.join(missing)}")
    return sorted(path for path in folder.iterdir()
                  if path.is_file() and any(fnmatch(path.name, pattern) for pattern in PUBLISHED_FILES))


def read_ensemble_config(folder) -> dict:
    """An ensemble folder's pneumo.json, checked to hold what using it needs."""
    path = Path(folder) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{path}: cannot be read ({error})") from None
    missing = [key for key in ("members", "class_names", "positive_class", "threshold", "calibration")
               if key not in config]
    if missing or config.get("kind") != ENSEMBLE_KIND:
        raise ModelLoadError(f"{path}: not a pneumo ensemble config (missing {', '.join(missing) or 'kind'})")
    return config


def read_site_eval(folder) -> dict:
    """`pneumo site-eval --record`'s results kept in a model folder, by prevalence ("own", "0.1", ...), or {};
    pneumo 0.2 kept one set, at the folder's own prevalence."""
    path = Path(folder) / SITE_EVAL_FILE
    if not path.exists():
        return {}
    kept = json.loads(path.read_text())
    return kept["at_prevalence"] if "at_prevalence" in kept else {"own": kept}


@command("pneumo model-folder", also=(OSError,))
def main(argv=None) -> int:
    """pneumo model-folder upgrade FOLDER..."""
    import argparse

    parser = argparse.ArgumentParser(prog="pneumo model-folder", description="Maintain model folders.")
    commands = parser.add_subparsers(dest="command", required=True)
    upgrade_parser = commands.add_parser("upgrade", help="rewrite pneumo 0.1 folders (config.json + model.keras) "
                                                         "in today's layout (pneumo.json + Keras' directory format)")
    upgrade_parser.add_argument("folders", nargs="+")
    args = parser.parse_args(argv)
    for folder in args.folders:
        changed = upgrade(folder)
        print(f"{folder}: {'upgraded' if changed else 'already in the current layout'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

