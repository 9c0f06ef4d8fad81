"""Whether an ensemble of model folders beats each of them, on the validation evidence only.

    python -m pneumo.ensemble models/cnn-lstm models/resnet50 [...] --data ../shared/data/chest_xray

The ensemble is the mean of the members' calibrated P(pneumonia). Every member must have been trained on
the same `data_split.csv`, so they share one validation split and one earliest-acquisitions hold-out. Each
member and each combination of two or more members is scored on the selection criterion the models were
chosen on (`robustness.CRITERION`: clean validation, the same images under one strong perturbation each,
and the hold-out). The table is printed and written to `--out` (CSV). The test set is never read here.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SETS = ("clean", "perturbed", "holdout")


def shared_split(folders) -> pd.DataFrame:
    """The members' one data split; a member trained on another split is refused."""
    from . import model_folder
    from .errors import DataFolderError

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
    from .robustness import prepared_inputs

    images = prepared_inputs(grays, predictor.preprocessing, predictor.height, perturbation_of)
    return np.concatenate([predictor.probabilities(images[i:i + batch_size])[:, predictor.positive_index]
                           for i in range(0, len(images), batch_size)])


def member_scores(folders, data_root) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """(labels of each set, P(positive) of each set for each member, by folder name)."""
    from . import model_folder
    from .predictor import Predictor
    from .robustness import STRONG, decode_all

    split = shared_split(folders)
    split["path"] = [str(Path(data_root) / p) for p in split.path]
    validation = split[split.split == model_folder.VALIDATION_SPLIT]
    holdout = split[split.split == model_folder.HOLDOUT_SPLIT]
    # The criterion's perturbed set: image i under STRONG[i % len(STRONG)], seeded by i (as training scores it).
    planes = {"clean": decode_all(validation.path), "holdout": decode_all(holdout.path)}
    predictors = [Predictor.from_folder(folder) for folder in folders]
    positive_class = predictors[0].positive_class
    labels = {name: (frame.class_name == positive_class).to_numpy(int)
              for name, frame in (("clean", validation), ("perturbed", validation), ("holdout", holdout))}
    if len(set(labels["holdout"])) < 2:  # a split without a two-class hold-out is chosen on the other two
        del labels["holdout"]
    probabilities = {}
    for predictor in predictors:
        probabilities[predictor.name] = {
            "clean": positive_probabilities(predictor, planes["clean"]),
            "perturbed": positive_probabilities(predictor, planes["clean"], lambda i: STRONG[i % len(STRONG)])}
        if "holdout" in labels:
            probabilities[predictor.name]["holdout"] = positive_probabilities(predictor, planes["holdout"])
    return labels, probabilities


def combination_table(labels, probabilities) -> pd.DataFrame:
    """The selection criterion and its parts for each member alone and each mean of two or more members."""
    from .robustness import selection_scores

    names = list(probabilities)
    rows = []
    for size in range(1, len(names) + 1):
        for members in itertools.combinations(names, size):
            mean = {name: np.mean([probabilities[m][name] for m in members], axis=0) for name in labels}
            scores = selection_scores(*[(labels[name], mean[name]) if name in labels else None for name in SETS])
            rows.append({"members": " + ".join(members), "size": size, **scores})
    return pd.DataFrame(rows).sort_values(["criterion", "size"], ascending=[False, True], ignore_index=True)


def main(argv=None) -> int:
    from .errors import PneumoError
    from .files import write_csv

    parser = argparse.ArgumentParser(prog="python -m pneumo.ensemble", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="two or more model folders trained on the same data split")
    parser.add_argument("--data", required=True, help="the dataset root the folders were trained on (holding train/)")
    parser.add_argument("--out", type=Path, help="write the table to this CSV file")
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("an ensemble needs two or more model folders")
    try:
        table = combination_table(*member_scores(args.models, args.data))
    except PneumoError as error:
        print(f"pneumo.ensemble: {error}", file=sys.stderr)
        return 1
    if args.out:
        write_csv(args.out, table)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format="%.4f"))
    best_single = table[table["size"] == 1].criterion.max()
    everyone = table[table["size"] == len(args.models)].iloc[0]
    verdict = "beats" if everyone.criterion > best_single else "does not beat"
    print(f"\nall {len(args.models)} models: criterion {everyone.criterion:.4f}, which {verdict} the best single "
          f"model ({best_single:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
