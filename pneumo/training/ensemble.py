"""Ensembles of model folders: whether one beats each member on the validation evidence, and the ensemble
folder that `batch_eval.py` and the library score like a model folder.

    pneumo ensemble models/cnn-lstm models/resnet50 [...] --data ../shared/data/chest_xray
    pneumo ensemble models/cnn-lstm models/resnet50 [...] --data ../shared/data/chest_xray --write models/ensemble

The ensemble is the mean of the members' calibrated P(pneumonia). Every member must have been trained on
the same `data_split.csv`, so they share one validation split and one earliest-acquisitions hold-out. Each
member and each combination of two or more members is scored on the selection criterion the models were
chosen on (`robustness.CRITERION`: clean validation, the same images under one strong perturbation each,
and the hold-out). The table is printed and written to `--out` (CSV). The test set is never read here.

`--write` makes an ensemble folder of all the members given: no network of its own, a `pneumo.json` of
`"kind": "ensemble"` that names each member's folder and the SHA-256 of the weights it was fitted with, and
its own temperature, class bias and threshold, fitted on the mean's validation probabilities like a single
model's (`pneumo.prediction.calibration`). `pneumo.load_predictor` reads it as an `EnsemblePredictor`.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..hub import model_folder
from ..cli import add_dataset_argument, command
from .data import subgroup_of
from ..prediction.ensemble_predictor import EXPLANATION, mean_log_probabilities
from ..errors import DataFolderError, ModelLoadError
from .export import DEFAULT_OPERATING_POINT, OPERATING_POINTS, fit_on_validation
from ..imaging.decoding import decode_many_for_model
from ..metrics import full_metrics
from ..hub.model_card import write_model_card
from ..prediction.predictor import Predictor
from .selection import CRITERION, STRONG, prepared_inputs, selection_scores

SETS = ("clean", "perturbed", "holdout")

def shared_split(folders) -> pd.DataFrame:
    """The members' one data split; a member trained on another split is refused."""
    splits = [Path(folder) / model_folder.SPLIT_FILE for folder in folders]
    missing = [str(path) for path in splits if not path.exists()]
    if missing:
        raise DataFolderError(f"{missing[0]} is missing: an ensemble needs each member's data split")
    first = splits[0].read_bytes()
    different = [str(path.parent) for path in splits[1:] if path.read_bytes() != first]
    if different:
        raise DataFolderError(f"{different[0]} was trained on another data split than {folders[0]}: their "
                              "validation results cannot be combined")
    return pd.read_csv(splits[0])


def positive_probabilities(predictor, grays, perturbation_of=None, batch_size: int = 64) -> np.ndarray:
    """The member's calibrated P(positive class) of decoded planes (perturbed first, when asked)."""
    images = prepared_inputs(grays, predictor.preprocessing, predictor.height, perturbation_of)
    return predictor.positive_probabilities(images, batch_size)


def member_scores(folders, data_root) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """(labels of each set, P(positive) of each set for each member, by folder name)."""
    split = shared_split(folders)
    split["path"] = [str(Path(data_root) / p) for p in split.path]
    validation = split[split.split == model_folder.VALIDATION_SPLIT]
    holdout = split[split.split == model_folder.HOLDOUT_SPLIT]
    # The criterion's perturbed set: image i under STRONG[i % len(STRONG)], seeded by i (as training scores it).
    predictors = [Predictor.from_folder(folder) for folder in folders]
    positive_class = predictors[0].positive_class
    labels = {name: (frame.class_name == positive_class).to_numpy(int)
              for name, frame in (("clean", validation), ("perturbed", validation), ("holdout", holdout))}
    if len(set(labels["holdout"])) < 2:  # a split without a two-class hold-out is chosen on the other two
        del labels["holdout"]
    probabilities = {}
    for predictor in predictors:
        planes = {name: decode_many_for_model(frame.path, predictor.height, predictor.width)
                  for name, frame in (("clean", validation), ("holdout", holdout))}
        probabilities[predictor.name] = {
            "clean": positive_probabilities(predictor, planes["clean"]),
            "perturbed": positive_probabilities(predictor, planes["clean"], lambda i: STRONG[i % len(STRONG)])}
        if "holdout" in labels:
            probabilities[predictor.name]["holdout"] = positive_probabilities(predictor, planes["holdout"])
    return labels, probabilities


def combination_table(labels, probabilities) -> pd.DataFrame:
    """The selection criterion and its parts for each member alone and each mean of two or more members."""
    names = list(probabilities)
    rows = []
    for size in range(1, len(names) + 1):
        for members in itertools.combinations(names, size):
            mean = {name: np.mean([probabilities[m][name] for m in members], axis=0) for name in labels}
            scores = selection_scores(*[(labels[name], mean[name]) if name in labels else None for name in SETS])
            rows.append({"members": " + ".join(members), "size": size, **scores})
    return pd.DataFrame(rows).sort_values(["criterion", "size"], ascending=[False, True], ignore_index=True)


def fit_ensemble(folders, data_root, labels, probabilities, out) -> dict:
    """Write the ensemble folder `out` of all `folders` from their scores (`member_scores`): its calibration,
    operating points and validation metrics, fitted like a single model's on the shared validation split, the
    hold-out's metrics, its selection criterion, the data split and its model card. Returns its config."""
    import os

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not model_folder.is_ensemble(out):
        raise DataFolderError(f"{out}: exists and is not an ensemble folder; write the ensemble elsewhere")
    configs = [model_folder.read_config(folder) for folder in folders]
    classes = {(tuple(config["class_names"]), config["positive_class"]) for config in configs}
    if len(classes) > 1 or len(configs[0]["class_names"]) != 2:
        raise ModelLoadError(f"an ensemble averages P(positive) of binary models with the same classes; these have "
                             f"{sorted(classes)}")
    class_names, positive_class = list(configs[0]["class_names"]), configs[0]["positive_class"]
    positive_index = class_names.index(positive_class)
    names = [config.get("name", Path(folder).name) for config, folder in zip(configs, folders)]
    split = shared_split(folders)
    parts = {name: split[split.split == part] for name, part in
             (("clean", model_folder.VALIDATION_SPLIT), ("holdout", model_folder.HOLDOUT_SPLIT))}
    mean = {part: np.mean([probabilities[name][part] for name in names], axis=0) for part in labels}
    calibration, operating_points, threshold, metrics = fit_on_validation(
        mean_log_probabilities(mean["clean"], positive_index),
        np.where(labels["clean"] == 1, positive_index, 1 - positive_index), positive_index, parts["clean"].path)
    calibrated = {name: calibration.probabilities(mean_log_probabilities(values, positive_index))[:, positive_index]
                  for name, values in mean.items()}
    if "holdout" in labels:
        metrics["holdout_earliest"] = full_metrics(labels["holdout"], calibrated["holdout"], threshold,
                                                   [subgroup_of(p) for p in parts["holdout"].path])
    criterion = selection_scores(*[(labels[name], calibrated[name]) if name in labels else None for name in SETS])
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("metrics_*.json"):  # an earlier fit's; its test_scorings.csv lines stay, with their hash
        stale.unlink()
    config = {
        "pneumo_version": __version__,
        "kind": model_folder.ENSEMBLE_KIND,
        "name": out.name,
        "architecture": "ensemble",
        "description": (f"the mean of the calibrated P({positive_class}) of {', '.join(names)}, recalibrated with "
                        "its own temperature and class bias"),
        "members": [{"name": name, "folder": os.path.relpath(Path(folder).resolve(), out.resolve()),
                     "model_sha256": model_folder.model_file_sha256(folder), "input": config["input"]}
                    for name, folder, config in zip(names, folders, configs)],
        "class_names": class_names,
        "positive_class": positive_class,
        "threshold": threshold,
        "threshold_method": OPERATING_POINTS[DEFAULT_OPERATING_POINT],
        "operating_point": DEFAULT_OPERATING_POINT,
        "operating_points": operating_points,
        "calibration": calibration.to_config("validation split"),
        "explanation": {"method": model_folder.ENSEMBLE_KIND, "description": EXPLANATION},
        "training": {"data": f"the members' shared data split ({model_folder.SPLIT_FILE})",
                     "validation_images": int(len(parts["clean"])), "holdout_images": int(len(parts["holdout"])),
                     "selection_criterion": {**CRITERION, **{key: round(float(value), 4)
                                                             for key, value in criterion.items()}}},
    }
    model_folder.write_config(out, config)
    model_folder.write_metrics(out, "validation", metrics)
    shutil.copyfile(Path(folders[0]) / model_folder.SPLIT_FILE, out / model_folder.SPLIT_FILE)
    write_model_card(out)
    return config


@command("pneumo ensemble")
def main(argv=None) -> int:
    from ..prediction.calibration import Calibration
    from ..files import write_csv

    parser = argparse.ArgumentParser(prog="pneumo ensemble", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="two or more model folders trained on the same data split")
    add_dataset_argument(parser, "the dataset root the folders were trained on (holding train/)")
    parser.add_argument("--out", type=Path, help="write the table to this CSV file")
    parser.add_argument("--write", type=Path, metavar="FOLDER",
                        help="write the ensemble of all the models given to this folder (pneumo.json, metrics, card)")
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("an ensemble needs two or more model folders")
    labels, probabilities = member_scores(args.models, args.data)
    table = combination_table(labels, probabilities)
    if args.write:
        config = fit_ensemble(args.models, args.data, labels, probabilities, args.write)
    if args.out:
        write_csv(args.out, table)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format="%.4f"))
    best_single = table[table["size"] == 1].criterion.max()
    everyone = table[table["size"] == len(args.models)].iloc[0]
    verdict = "beats" if everyone.criterion > best_single else "does not beat"
    print(f"\nall {len(args.models)} models: criterion {everyone.criterion:.4f}, which {verdict} the best single "
          f"model ({best_single:.4f})")
    if args.write:
        print(f"wrote {args.write}: threshold {config['threshold']:.3f}, "
              f"{Calibration.from_config(config['calibration']).describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
