"""Train an architecture on an image folder and write a Hub-ready model folder.

    python -m pneumo.train --arch cnn_lstm --data ../shared/data/chest_xray --out models/cnn-lstm

Resumable: run the same command again after an interruption and it continues from the last finished
epoch (checkpoints live in OUT/checkpoints/, which is not part of the published folder).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from . import data as datalib
from .models import architecture_names, get_architecture

SPLIT_FILE = "data_split.csv"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pneumo.train", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", required=True, choices=architecture_names())
    parser.add_argument("--data", required=True, help="dataset root holding train/ (with NORMAL/, PNEUMONIA/)")
    parser.add_argument("--out", required=True, help="model folder to write, e.g. models/cnn-lstm")
    parser.add_argument("--input-size", type=int, help="square input side in pixels (default: the architecture's)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=6, help="epochs without validation AUC gain before stopping")
    parser.add_argument("--validation-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--backbone-weights", default="none",
                        help="resnet50 only: imagenet | none | PATH to a weights file")
    parser.add_argument("--head-epochs", type=int, default=5,
                        help="with pretrained backbone weights: epochs that train the head alone")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="train in bfloat16 (fast on AMX/AVX-512 CPUs and GPUs); the saved model is float32")
    return parser.parse_args(argv)


def architecture_options(args) -> dict:
    if args.arch == "resnet50":
        weights = None if args.backbone_weights.lower() == "none" else args.backbone_weights
        return {"backbone_weights": weights}
    return {}


def validation_metrics_callback(dataset, labels):
    """A callback adding val_loss, val_accuracy and val_auc to the epoch logs, from one pass over `dataset`.

    It must come first among the callbacks: checkpointing, early stopping and the CSV log read its keys.
    """
    import keras
    from sklearn.metrics import roc_auc_score

    class ValidationMetrics(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            probabilities = self.model.predict(dataset, verbose=0).astype(np.float64)
            picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
            logs["val_loss"] = float(-np.log(picked).mean())
            logs["val_accuracy"] = float((probabilities.argmax(1) == labels).mean())
            logs["val_auc"] = float(roc_auc_score(labels, probabilities[:, 1]))
            print(f"  validation: loss {logs['val_loss']:.4f}  accuracy {logs['val_accuracy']:.4f}  "
                  f"AUC {logs['val_auc']:.4f}", flush=True)

    return ValidationMetrics()


def compile_model(model, learning_rate):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])


def fit(args) -> Path:
    import keras

    out = Path(args.out)
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")

    arch = get_architecture(args.arch)
    size = args.input_size or arch.default_input_size
    train_frame, validation_frame = load_split(args, out)
    print(f"train: {len(train_frame)} images, {train_frame.patient.nunique()} patients; "
          f"validation: {len(validation_frame)} images, {validation_frame.patient.nunique()} patients", flush=True)

    train_data = datalib.make_dataset(train_frame.path, train_frame.label, size, size, args.batch_size,
                                      shuffle_seed=args.seed, augment=True)
    validation_data = datalib.make_dataset(validation_frame.path, validation_frame.label, size, size, 64)
    weights = datalib.class_weights(train_frame.label)

    history_path = out / "history.csv"
    done_epochs = len(history_rows(history_path))
    last = checkpoints / "last.keras"
    if done_epochs and last.exists():
        print(f"resuming after epoch {done_epochs} from {last}", flush=True)
        model = keras.saving.load_model(last, safe_mode=True)
    else:
        done_epochs = 0
        history_path.unlink(missing_ok=True)
        model = arch.build((size, size, 3), len(datalib.CLASS_NAMES), **architecture_options(args))
        compile_model(model, args.learning_rate)

    stages = training_stages(args)
    for stage_name, stage_end, prepare in stages:
        if done_epochs >= stage_end:
            continue
        if prepare is not None:
            prepare(model)
        callbacks = [
            validation_metrics_callback(validation_data, validation_frame.label.to_numpy()),
            keras.callbacks.ModelCheckpoint(checkpoints / "best.keras", monitor="val_auc", mode="max",
                                            save_best_only=True, initial_value_threshold=best_so_far(history_path)),
            keras.callbacks.ModelCheckpoint(last),
            keras.callbacks.CSVLogger(history_path, append=True),
            keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=args.patience),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=max(2, args.patience // 3),
                                              min_lr=1e-6),
        ]
        print(f"stage {stage_name}: epochs {done_epochs + 1}..{stage_end}", flush=True)
        model.fit(train_data, epochs=stage_end, initial_epoch=done_epochs, class_weight=weights,
                  callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
        done_epochs = len(history_rows(history_path))
        if model.stop_training:
            break
    return out


def training_stages(args):
    """(name, last epoch, how to prepare the model) for each stage.

    From scratch: one stage. With pretrained backbone weights: the head alone first, then the last
    residual stage unfrozen at learning rate 1e-5.
    """
    if args.arch != "resnet50" or architecture_options(args)["backbone_weights"] is None:
        return [("all layers", args.epochs, None)]
    from .models.resnet50 import set_backbone_trainable

    def head_only(model):
        set_backbone_trainable(model, None)
        compile_model(model, args.learning_rate)

    def fine_tune(model):
        set_backbone_trainable(model, "conv5_")
        compile_model(model, 1e-5)

    return [("head only", args.head_epochs, head_only), ("fine-tune conv5", args.epochs, fine_tune)]


def history_rows(path: Path) -> list[dict]:
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def best_so_far(history_path: Path):
    aucs = [float(row["val_auc"]) for row in history_rows(history_path) if row.get("val_auc")]
    return max(aucs) if aucs else None


def load_split(args, out: Path):
    """The patient-level split, made once and stored, so a resumed run validates on the same patients."""
    import pandas as pd

    split_path = out / SPLIT_FILE
    if split_path.exists():
        frame = pd.read_csv(split_path)
        frame["path"] = [str(Path(args.data) / p) for p in frame.path]
        return frame[frame.split == "train"].reset_index(drop=True), frame[frame.split == "validation"].reset_index(drop=True)
    train_dir = datalib.find_splits(args.data).get("train")
    if train_dir is None:
        raise SystemExit(f"{args.data}: no train/ folder")
    train_frame, validation_frame = datalib.split_by_patient(
        datalib.list_labeled_images(train_dir), args.validation_fraction, args.seed)
    record = pd.concat([train_frame.assign(split="train"), validation_frame.assign(split="validation")])
    record["path"] = [os.path.relpath(p, args.data) for p in record.path]
    record.to_csv(split_path, index=False)
    return train_frame, validation_frame


def main(argv=None):
    args = parse_args(argv)
    checkpoints = Path(args.out) / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / "train_args.json").write_text(json.dumps(vars(args), indent=2))
    out = fit(args)
    from .export import export_model_folder

    export_model_folder(out)


if __name__ == "__main__":
    main()
