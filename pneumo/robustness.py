"""A validation that can see a shift: the validation split under acquisition perturbations, and the
selection criterion that training and the operating point are chosen on.

    python -m pneumo.robustness models/NAME --data ../shared/data/chest_xray

scores the model folder's validation split clean and under every perturbation of `perturbations.SUITE`
(each at two strengths, seeded), prints the table and writes `metrics_robustness.csv` into the folder:
per perturbation, ROC-AUC, and sensitivity and specificity at the model's threshold (the model card is
rewritten with its summary). The test set is never read here.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from .perturbations import SUITE, perturb

# The per-epoch criterion sees each validation image once, under one strong perturbation.
STRONG = [p for p in SUITE if p.strength == "strong"]
CRITERION = {
    "name": "worst_balanced_accuracy_at_95_sensitivity",
    "description": "the threshold that reaches sensitivity 0.95 on the clean validation split, then the lowest "
                   "balanced accuracy ((sensitivity + specificity) / 2) at that threshold over three sets: the "
                   "clean validation split, the validation split with one strong acquisition perturbation per "
                   "image (seeded), and the earliest-acquisitions hold-out",
}


def prepared_inputs(grays, preprocessing, size: int, perturbation_of=None) -> np.ndarray:
    """Model inputs for decoded planes; `perturbation_of(i)` names the perturbation of image i, if any."""
    def one(index):
        gray = grays[index]
        if perturbation_of is not None:
            gray = perturb(gray, perturbation_of(index), seed=index)
        return preprocessing.model_input(gray, size, size)

    with ThreadPoolExecutor() as pool:
        return np.stack(list(pool.map(one, range(len(grays)))))


def balanced_accuracy(labels, prob_positive, threshold: float) -> float:
    labels = np.asarray(labels, dtype=int)
    predicted = np.asarray(prob_positive) >= threshold
    return float((predicted[labels == 1].mean() + (~predicted[labels == 0]).mean()) / 2)


def selection_scores(clean: tuple, perturbed: tuple, holdout: tuple | None) -> dict:
    """The criterion (see CRITERION) from (labels, P(positive)) of each set, with its parts."""
    from sklearn.metrics import roc_auc_score

    from .calibration import threshold_for_sensitivity

    threshold = threshold_for_sensitivity(*clean, 0.95)
    sets = {"clean": clean, "perturbed": perturbed, **({"holdout": holdout} if holdout else {})}
    scores = {f"{name}_auc": float(roc_auc_score(*values)) for name, values in sets.items()}
    scores.update({f"{name}_balanced_accuracy": balanced_accuracy(*values, threshold) for name, values in sets.items()})
    scores["criterion"] = min(scores[f"{name}_balanced_accuracy"] for name in sets)
    return scores


def robustness_table(predictor, paths, labels) -> pd.DataFrame:
    """Clean and perturbed metrics of one predictor on labeled images, at the predictor's threshold."""
    from .metrics import compute_metrics
    from .imaging import decode_many_for_model

    labels = np.asarray(labels, dtype=int)
    grays = decode_many_for_model(paths, predictor.height, predictor.width)
    rows = []
    for perturbation in [None, *SUITE]:
        images = prepared_inputs(grays, predictor.preprocessing, predictor.height,
                                 None if perturbation is None else (lambda i, p=perturbation: p))
        probabilities = np.concatenate([predictor.probabilities(images[i:i + 64])[:, predictor.positive_index]
                                        for i in range(0, len(images), 64)])
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
    from . import model_folder
    from .errors import DataFolderError

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


def main(argv=None) -> int:
    import sys

    from . import model_folder
    from .errors import PneumoError
    from .files import write_csv
    from .modelcard import write_model_card
    from .predictor import Predictor

    parser = argparse.ArgumentParser(prog="python -m pneumo.robustness", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="model folder (with its data_split.csv)")
    parser.add_argument("--data", required=True, help="the dataset root the folder was trained on (holding train/)")
    args = parser.parse_args(argv)
    try:
        predictor = Predictor.from_folder(args.model)
        validation = validation_images(args.model, args.data)
        table = robustness_table(predictor, validation.path, validation.label)
    except PneumoError as error:
        print(f"pneumo.robustness: {error}", file=sys.stderr)
        return 1
    write_csv(Path(args.model) / model_folder.ROBUSTNESS_FILE, table)
    write_model_card(args.model)  # the card summarises the suite
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.drop(columns="description").to_string(index=False, float_format="%.3f"))
    worst = table.iloc[1:].auc_change.min()
    print(f"\nlargest AUC loss under a perturbation: {-worst:.3f} (target <= 0.02)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
