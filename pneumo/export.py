"""Turn a finished training run (OUT/checkpoints/) into a self-describing model folder.

Fits the calibration temperature and the decision threshold on the validation split, then writes
model.keras, config.json, metrics_validation.json, training_curves.png and the model card.

    python -m pneumo.export models/cnn-lstm     # re-run after a training was stopped early
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .calibration import calibrated_probabilities, choose_threshold, fit_temperature
from .data import AUGMENTATION_SUMMARY, CLASS_NAMES, POSITIVE_CLASS, make_dataset
from .metrics import compute_metrics, expected_calibration_error
from .models import get_architecture
from .modelcard import write_model_card
from .plots import plot_training_curves

MODEL_FILE = "model.keras"


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


def predict_logits(model, paths, size: int) -> np.ndarray:
    import keras

    logits_model = keras.Model(model.input, model.get_layer("logits").output)
    dataset = make_dataset(list(paths), np.zeros(len(paths)), size, size, 64, cache=False)
    return np.concatenate([np.asarray(logits_model(x, training=False)) for x, _ in dataset])


def float32_copy(trained, arch, size: int, options: dict):
    """The same weights in a float32 model, whatever precision training used (CPUs infer in float32)."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    model = arch.build((size, size, 3), len(CLASS_NAMES), **options)
    model.set_weights(trained.get_weights())
    return model


def rebuild_options(args: dict) -> dict:
    """Architecture options that rebuild the trained graph without fetching any pretrained weights."""
    if args["arch"] == "resnet50":
        return {"imagenet_preprocessing": args["backbone_weights"].lower() != "none"}
    return {}


def export_model_folder(out) -> dict:
    import keras

    out = Path(out)
    args = json.loads((out / "checkpoints" / "train_args.json").read_text())
    arch = get_architecture(args["arch"])
    size = args.get("input_size") or arch.default_input_size
    options = rebuild_options(args)

    trained = keras.saving.load_model(out / "checkpoints" / "best.keras", compile=False, safe_mode=True)
    model = float32_copy(trained, arch, size, options)
    model.save(out / MODEL_FILE)

    split = pd.read_csv(out / "data_split.csv")
    validation = split[split.split == "validation"]
    logits = predict_logits(model, [str(Path(args["data"]) / p) for p in validation.path], size)
    labels = validation.label.to_numpy()
    temperature = fit_temperature(logits, labels)
    probabilities = calibrated_probabilities(logits, temperature)[:, 1]
    threshold = choose_threshold(labels, probabilities)
    metrics = compute_metrics(labels, probabilities, threshold)
    metrics["expected_calibration_error_before_calibration"] = expected_calibration_error(
        labels, calibrated_probabilities(logits)[:, 1])
    metrics["split"] = "validation (patient-level split of train/, never used for fitting weights)"
    write_json(out / "metrics_validation.json", metrics)

    history = pd.read_csv(out / "history.csv")
    train = split[split.split == "train"]
    config = {
        "pneumo_version": __version__,
        "name": out.name,
        "architecture": args["arch"],
        "architecture_options": options,
        "description": arch.description,
        "model_file": MODEL_FILE,
        "input": {"height": size, "width": size, "channels": 3},
        "preprocessing": {
            "decode": "any supported format -> one grayscale plane in [0, 1] (DICOM: modality LUT, VOI window, "
                      "MONOCHROME1 inverted)",
            "resize": "OpenCV INTER_AREA to the input size, aspect ratio not kept",
            "channels": "the grayscale plane repeated 3 times",
            "scale": [0.0, 1.0],
        },
        "class_names": list(CLASS_NAMES),
        "positive_class": POSITIVE_CLASS,
        "logits_layer": "logits",
        "gradcam_layer": arch.gradcam_layer,
        "threshold": threshold,
        "threshold_method": "maximum Youden's J on the validation split",
        "calibration": {"method": "temperature scaling", "temperature": temperature,
                        "fitted_on": "validation split"},
        "training": {
            "data": "Kermany et al. 2018 pediatric chest X-rays (CC BY 4.0), train/ folder",
            "train_images": int(len(train)),
            "train_patients": int(train.patient.nunique()),
            "validation_images": int(len(validation)),
            "validation_patients": int(validation.patient.nunique()),
            "class_counts_train": {name: int((train.label == i).sum()) for i, name in enumerate(CLASS_NAMES)},
            "validation_split": "patient-level, stratified, seed %d (data_split.csv)" % args["seed"],
            "epochs_run": int(len(history)),
            "best_epoch": int(history.val_auc.idxmax()) + 1,
            "batch_size": args["batch_size"],
            "learning_rate": args["learning_rate"],
            "optimizer": "Adam",
            "loss": "sparse categorical cross-entropy with balanced class weights",
            "precision": "bfloat16 mixed precision" if args.get("mixed_precision") else "float32",
            "augmentation": AUGMENTATION_SUMMARY,
            "seed": args["seed"],
            "backbone_weights": args["backbone_weights"] if args["arch"] == "resnet50" else None,
        },
    }
    write_json(out / "config.json", config)
    plot_training_curves(out / "history.csv", out / "training_curves.png")
    write_model_card(out)
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pneumo.export", description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a model folder with checkpoints/ from pneumo.train")
    config = export_model_folder(parser.parse_args(argv).folder)
    print(json.dumps({k: config[k] for k in ("name", "threshold", "calibration")}, indent=2))


if __name__ == "__main__":
    main()
