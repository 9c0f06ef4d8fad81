"""Turn a finished training run (OUT/checkpoints/) into a self-describing model folder.

Fits the calibration (temperature and class bias) and the operating points on the validation split, scores the
earliest-acquisitions hold-out, then writes the network (Keras' directory format), pneumo.json,
metrics_validation.json,
training_curves.png and the model card.

    pneumo export models/cnn-lstm     # re-run after a training was stopped early
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..site import adabn
from ..site.operating_point import SiteReference
from ..explain import methods
from ..hub import model_folder
from ..prediction.calibration import (
    Calibration,
    choose_threshold,
    fit_calibration,
    log_odds_of,
    threshold_for_sensitivity,
)
from ..cli import command
from .data import (  # defaults for runs of pneumo 0.1
    CLASS_NAMES,
    POSITIVE_CLASS,
    subgroup_of,
)
from ..errors import ModelLoadError
from ..imaging.decoding import Preprocessing, load_model_input
from ..metrics import expected_calibration_error, full_metrics
from ..hub.model_card import write_model_card
from ..networks import LOGITS_LAYER, get_architecture, logits_model
from ..prediction.ood import fit_reference
from .perturbations import AUGMENTATION_SUMMARY
from ..plots import plot_training_curves
from .selection import CRITERION

DEFAULT_OPERATING_POINT = "youden"
OPERATING_POINTS = {
    "youden": "maximum Youden's J (sensitivity + specificity - 1) on the validation split",
    "sensitivity_95": "the highest threshold with sensitivity >= 0.95 on the validation split",
}


def predict_logits(model, paths, size: int, preprocessing: Preprocessing, batch_size: int = 64) -> np.ndarray:
    """The class scores before the softmax of image files, through the one image path, on any Keras backend
    (a run trained on JAX or PyTorch exports there too)."""
    import keras

    scores, paths = logits_model(model), list(paths)
    return np.concatenate([
        keras.ops.convert_to_numpy(scores(np.stack([load_model_input(path, size, size, preprocessing)
                                                    for path in paths[start:start + batch_size]]), training=False))
        for start in range(0, len(paths), batch_size)])


def float32_copy(trained, arch, size: int, classes: int, options: dict):
    """The same weights in a float32 model, whatever precision training used (CPUs infer in float32)."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    model = arch.build((size, size, 3), classes, **options)
    model.set_weights(trained.get_weights())
    return model


def training_summary(args: dict, arch, options: dict, training_options: dict, split: pd.DataFrame,
                     history: pd.DataFrame, class_names) -> dict:
    """The `training` block of pneumo.json: data, split, recipe and which epoch was kept."""
    train = split[split.split == "train"]
    validation = split[split.split == "validation"]
    holdout = split[split.split == model_folder.HOLDOUT_SPLIT]
    criterion_column = "val_criterion" if "val_criterion" in history else "val_auc"
    return {
        "data": "Kermany et al. 2018 pediatric chest X-rays (CC BY 4.0), train/ folder",
        "train_images": len(train),
        "train_patients": int(train.patient.nunique()),
        "validation_images": len(validation),
        "validation_patients": int(validation.patient.nunique()),
        "holdout_images": len(holdout),
        "class_counts_train": {name: int((train.label == i).sum()) for i, name in enumerate(class_names)},
        "validation_split": f"patient-level, stratified, seed {args['seed']} (data_split.csv)",
        "holdout_split": (f"the {args.get('holdout_fraction', 0):.0%} of patients with the earliest running numbers "
                          "of each file-name series, taken whole (data_split.csv: holdout_earliest)"),
        "selection_criterion": CRITERION,
        "epochs_run": len(history),
        "best_epoch": int(history[criterion_column].idxmax()) + 1,
        "batch_size": args["batch_size"],
        "learning_rate": args["learning_rate"],
        "optimizer": f"AdamW (weight decay {args.get('weight_decay')}), cosine decay of the learning rate",
        "loss": (f"categorical cross-entropy with label smoothing {args.get('label_smoothing')} and balanced "
                 "class weights" + (f", plus {args['encoding_consistency']:g} x the squared gap between the log-odds "
                                    "of each image and of the same picture saved as another file (JPEG, PNG, "
                                    "upscaled), over the batch's variance of log-odds"
                                    if args.get("encoding_consistency") else "")),
        "precision": "bfloat16 mixed precision" if args.get("mixed_precision") else "float32",
        "keras_backend": args.get("keras_backend", "tensorflow"),
        # Free text a run's train_args.json may carry: where and how it ran, when that differs from plain.
        "notes": args.get("notes", ""),
        "augmentation": AUGMENTATION_SUMMARY,
        "seed": args["seed"],
        "build_options": options,
        # Where the weights started: the training options (the rebuild options no longer name the checkpoint).
        "weights_note": arch.weights_note(training_options) + (
            f" Then fine-tuned from the model folder {Path(args['init_from']).name} (network SHA-256 "
            f"{args.get('init_from_sha256')})." if args.get("init_from") else ""),
    }


def split_metrics(model, split: pd.DataFrame, data_root, size, preprocessing, calibration, threshold, positive_index):
    """Metrics (with intervals and subgroups) of the calibrated model on one part of data_split.csv."""
    logits = predict_logits(model, [str(Path(data_root) / p) for p in split.path], size, preprocessing)
    probabilities = calibration.probabilities(logits)[:, positive_index]
    return full_metrics((split.label.to_numpy() == positive_index).astype(int), probabilities, threshold,
                        [subgroup_of(p) for p in split.path])


def fit_on_validation(logits, labels, positive_index: int, paths) -> tuple[Calibration, dict, float, dict]:
    """What a model folder fits on its validation split, from the logits and class indices of its images:
    the calibration, the operating points, the default one's threshold and the validation metrics (with
    subgroups from the file `paths`, and the calibration error before calibration)."""
    labels = np.asarray(labels)
    calibration = fit_calibration(logits, labels)
    probabilities = calibration.probabilities(logits)[:, positive_index]
    labels = (labels == positive_index).astype(int)  # metrics speak of the positive class against the rest
    operating_points = {"youden": choose_threshold(labels, probabilities),
                        "sensitivity_95": threshold_for_sensitivity(labels, probabilities, 0.95)}
    threshold = operating_points[DEFAULT_OPERATING_POINT]
    metrics = full_metrics(labels, probabilities, threshold, [subgroup_of(p) for p in paths])
    metrics["expected_calibration_error_before_calibration"] = expected_calibration_error(
        labels, Calibration().probabilities(logits)[:, positive_index])
    metrics["split"] = "validation (patient-level split of train/, never used for fitting weights)"
    return calibration, operating_points, threshold, metrics


@dataclass(frozen=True)
class ValidationPass:
    """A network's class scores (logits) on the validation split's images, each read and decoded once: as released,
    and where the network has batch normalisation, with its statistics re-estimated on those clean images, as
    pneumo.site.adapt re-estimates them on a site's (None otherwise)."""
    released: np.ndarray
    adapted: np.ndarray | None


def validation_pass(model, validation: pd.DataFrame, data_root, size: int, preprocessing: Preprocessing,
                    batch_size: int = 64) -> ValidationPass:
    """The `ValidationPass` of `model` on `validation` (rows of data_split.csv). The network is left as it was."""
    import keras

    inputs = np.stack([load_model_input(str(Path(data_root) / path), size, size, preprocessing)
                       for path in validation.path])
    scores = logits_model(model)

    def logits() -> np.ndarray:
        return np.concatenate([keras.ops.convert_to_numpy(scores(batch, training=False))
                               for batch in adabn.in_batches(inputs, batch_size)])

    released = logits()
    if not adabn.batch_norm_layers(model):
        return ValidationPass(released, None)
    statistics = adabn.batch_norm_statistics(model)
    try:
        adabn.reestimate_batch_norm(model, adabn.in_batches(inputs))
        return ValidationPass(released, logits())
    finally:
        adabn.set_statistics(model, statistics)


def fit_adaptation_reference(scores: ValidationPass, validation: pd.DataFrame, positive_index: int,
                             released_roc_auc: float) -> dict | None:
    """What a model adapted to a site (pneumo.site.adapt) decides with: the calibration and operating points fitted on
    the validation split's scores after its batch-norm statistics are re-estimated on the clean validation images,
    as they will be on the site's. The released ones would not do: the moving statistics come from augmented
    training batches, not clean X-rays (docs/experiments/adaptation.py measures the difference). With the
    validation ROC-AUC of the released network (`released_roc_auc`), to tell whether the re-estimation costs
    more than a site could gain (pneumo.site.adapt refuses then). None for a network without batch normalisation."""
    if scores.adapted is None:
        return None
    calibration, operating_points, threshold, metrics = fit_on_validation(scores.adapted, validation.label.to_numpy(),
                                                                          positive_index, validation.path)
    fitted_on = "validation split, batch-norm statistics re-estimated on its clean images"
    return {"method": adabn.METHOD, "calibration": calibration.to_config(fitted_on),
            "threshold": threshold, "threshold_method": OPERATING_POINTS[DEFAULT_OPERATING_POINT] + " (" + fitted_on
            + ")", "operating_point": DEFAULT_OPERATING_POINT, "operating_points": operating_points,
            "validation": {key: metrics[key] for key in ("n_images", "sensitivity", "specificity", "roc_auc",
                                                         "expected_calibration_error")},
            "released_validation_roc_auc": released_roc_auc}


def fit_site_reference(scores: ValidationPass, validation: pd.DataFrame, positive_index: int,
                       calibration: Calibration, adaptation: dict | None) -> dict:
    """What a site operating point (pneumo.site.operating_point) compares a site's scores with: validation's two
    classes' calibrated log-odds, through the released network and, where `adaptation` (the block
    `fit_adaptation_reference` fitted) exists, through the network adapted to validation's clean images with its
    calibration."""
    positives = validation.label.to_numpy() == positive_index

    def shapes(logits: np.ndarray, with_calibration: Calibration) -> dict:
        z = log_odds_of(with_calibration.probabilities(logits)[:, positive_index])
        return SiteReference.from_scores(z, positives).to_config()

    block = {"fitted_on": f"validation split ({len(positives)} images)",
             "released": shapes(scores.released, calibration)}
    if adaptation and scores.adapted is not None:
        block["adapted"] = shapes(scores.adapted, Calibration.from_config(adaptation["calibration"]))
    return block


def export_model_folder(out) -> dict:
    import keras

    out = Path(out)
    checkpoints = out / model_folder.CHECKPOINTS
    args_path = checkpoints / model_folder.TRAIN_ARGS_FILE
    if not (checkpoints / "best.keras").exists() or not args_path.exists():
        raise ModelLoadError(f"{out}: no finished training run to export (checkpoints/best.keras is missing)")
    args = json.loads(args_path.read_text())
    arch = get_architecture(args["arch"])
    size = args.get("input_size") or arch.default_input_size
    weights = args.get("backbone_weights")
    training_options = arch.options_for_training(None if str(weights).lower() == "none" else weights)
    options = arch.options_for_rebuild(training_options)
    preprocessing = Preprocessing({"method": args.get("intensity", "decoder_scale")},
                                  smoothing=args.get("smoothing", 0.0))
    class_names = list(args.get("class_names", CLASS_NAMES))
    positive_class = args.get("positive_class", POSITIVE_CLASS)
    positive_index = class_names.index(positive_class)

    trained = keras.saving.load_model(checkpoints / "best.keras", compile=False, safe_mode=True)
    model = float32_copy(trained, arch, size, len(class_names), options)
    (out / model_folder.LEGACY_MODEL_FILE).unlink(missing_ok=True)  # re-exporting a folder of the 0.1 layout
    model_folder.save_network(model, out)

    split = pd.read_csv(out / model_folder.SPLIT_FILE)
    validation = split[split.split == "validation"]
    scores = validation_pass(model, validation, args["data"], size, preprocessing)
    calibration, operating_points, threshold, metrics = fit_on_validation(scores.released, validation.label.to_numpy(),
                                                                          positive_index, validation.path)
    holdout = split[split.split == model_folder.HOLDOUT_SPLIT]
    if holdout.label.nunique() == 2:
        metrics["holdout_earliest"] = split_metrics(model, holdout, args["data"], size, preprocessing, calibration,
                                                    threshold, positive_index)
    model_folder.write_metrics(out, "validation", metrics)

    history = pd.read_csv(out / model_folder.HISTORY_FILE)
    config = {
        "pneumo_version": __version__,
        "name": out.name,
        "architecture": args["arch"],
        "architecture_options": options,
        "description": arch.description,
        "input": {"height": size, "width": size, "channels": 3},
        "preprocessing": preprocessing.to_config(),
        "class_names": class_names,
        "positive_class": positive_class,
        "logits_layer": LOGITS_LAYER,
        "explanation": methods.for_architecture(arch),
        # pneumo 0.2 reads only this key: a Grad-CAM folder exported now still loads there.
        **({"gradcam_layer": arch.gradcam_layer} if arch.explanation == methods.GRADCAM else {}),
        "threshold": threshold,
        "threshold_method": OPERATING_POINTS[DEFAULT_OPERATING_POINT],
        "operating_point": DEFAULT_OPERATING_POINT,
        "operating_points": operating_points,
        "calibration": calibration.to_config("validation split"),
        "training": training_summary(args, arch, options, training_options, split, history, class_names),
    }
    reference = fit_adaptation_reference(scores, validation, positive_index, metrics["roc_auc"])
    if reference:
        config["adaptation"] = reference
    config["site_reference"] = fit_site_reference(scores, validation, positive_index, calibration, reference)
    model_folder.write_config(out, config)
    config["out_of_distribution"] = fit_reference(out, args["data"])
    plot_training_curves(out / model_folder.HISTORY_FILE, out / model_folder.CURVES_FILE)
    write_model_card(out)
    return config


@command("pneumo export")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pneumo export", description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a model folder with checkpoints/ from pneumo.training.train")
    config = export_model_folder(parser.parse_args(argv).folder)
    print(json.dumps({k: config[k] for k in ("name", "threshold", "operating_points", "calibration")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
