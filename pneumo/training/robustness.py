"""A validation that can see a shift: the validation split under acquisition perturbations (the selection
criterion that training chooses on is pneumo.training.selection).

    pneumo robustness models/NAME --data ../shared/data/chest_xray

scores the model folder's validation split clean and under every perturbation of `perturbations.SUITE`
(each at two strengths, seeded), prints the table and writes `metrics_robustness.csv` into the folder:
per perturbation, ROC-AUC, and sensitivity and specificity at the model's threshold (the model card is
rewritten with its summary). The test set is never read here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ..hub import model_folder
from ..cli import add_dataset_argument, command
from ..errors import DataFolderError
from ..files import write_csv
from ..imaging.decoding import decode_many_for_model
from ..metrics import compute_metrics
from ..hub.model_card import write_model_card
from .perturbations import SUITE
from ..prediction.predictor import Predictor
from .selection import prepared_inputs


def robustness_table(predictor, paths, labels) -> pd.DataFrame:
    """Clean and perturbed metrics of one predictor on labeled images, at the predictor's threshold."""
    labels = np.asarray(labels, dtype=int)
    grays = decode_many_for_model(paths, predictor.height, predictor.width)
    rows = []
    for perturbation in [None, *SUITE]:
        images = prepared_inputs(grays, predictor.preprocessing, predictor.height,
                                 None if perturbation is None else (lambda i, p=perturbation: p))
        probabilities = predictor.positive_probabilities(images)
        metrics = compute_metrics(labels, probabilities, predictor.threshold)
        rows.append({"perturbation": "clean" if perturbation is None else perturbation.name,
                     "strength": "" if perturbation is None else perturbation.strength,
                     "description": "" if perturbation is None else perturbation.description,
                     "roc_auc": metrics["roc_auc"], "sensitivity": metrics["sensitivity"],
                     "specificity": metrics["specificity"], "accuracy": metrics["accuracy"]})
    table = pd.DataFrame(rows)
    table["auc_change"] = table.roc_auc - table.roc_auc.iloc[0]
    return table


def validation_images(folder, data_root) -> pd.DataFrame:
    """The model folder's validation split (from its data_split.csv), with paths under `data_root`."""
    split_path = Path(folder) / model_folder.SPLIT_FILE
    if not split_path.exists():
        raise DataFolderError(f"{folder}: no {model_folder.SPLIT_FILE}; the robustness suite scores the validation "
                              "split the model was chosen on")
    split = pd.read_csv(split_path)
    validation = split[split.split == model_folder.VALIDATION_SPLIT].reset_index(drop=True)
    validation["path"] = [str(Path(data_root) / p) for p in validation.path]
    missing = [p for p in validation.path[:5] if not Path(p).exists()]
    if missing:
        raise DataFolderError(f"{data_root}: not the dataset root of {split_path} ({missing[0]} is missing)")
    return validation


@command("pneumo robustness")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pneumo robustness", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="model folder (with its data_split.csv)")
    add_dataset_argument(parser, "the dataset root the folder was trained on (holding train/)")
    args = parser.parse_args(argv)
    predictor = Predictor.from_folder(args.model)
    validation = validation_images(args.model, args.data)
    table = robustness_table(predictor, validation.path, validation.label)
    write_csv(Path(args.model) / model_folder.ROBUSTNESS_FILE, table)
    write_model_card(args.model)  # the card summarises the suite
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.drop(columns="description").to_string(index=False, float_format="%.3f"))
    worst = table.iloc[1:].auc_change.min()
    print(f"\nlargest AUC loss under a perturbation: {-worst:.3f} (target <= 0.02)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
