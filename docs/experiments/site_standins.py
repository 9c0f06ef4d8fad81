"""Stand-in sites for choosing the label-free site operating point (issue 32), from train/ only.

For each bundled model, the class scores (calibrated log-odds of P(pneumonia), the released calibration) of:
  V   the validation split (clean)
  VP  the validation split, each image under one strong acquisition perturbation (seeded, as selection's)
  H   the earliest-acquisitions hold-out (clean)
  HP  the hold-out, each image under one strong perturbation
and, for a network with batch normalisation, the same four after AdaBN on that very set's images (with the
folder's calibration for adapted networks), at the set's own mix and with the pneumonia images thinned to 10% and
25% (adapted to the thinned set, scored on it). Written to runs/site_standins/NAME.npz with labels and patients.

    python docs/experiments/site_standins.py [--models cnn-lstm resnet50 ...] [--data ../shared/data/chest_xray]

The official test set is not read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pneumo.hub.loading import load_predictor  # noqa: E402
from pneumo.imaging.decoding import decode_many_for_model  # noqa: E402
from pneumo.prediction.calibration import Calibration  # noqa: E402
from pneumo.site.adabn import batch_norm_layers, batch_norm_statistics, in_batches, reestimate_batch_norm, \
    set_statistics  # noqa: E402
from pneumo.training.data import patient_id_from_filename  # noqa: E402
from pneumo.training.selection import STRONG, prepared_inputs  # noqa: E402

PREVALENCES = (0.10, 0.25)


def log_odds(calibration: Calibration, logits: np.ndarray, positive: int) -> np.ndarray:
    p = np.clip(calibration.probabilities(logits)[:, positive], 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def thinned(labels: np.ndarray, prevalence: float, seed: int) -> np.ndarray:
    """Indices of a subset with the pneumonia images thinned so that they make `prevalence` of it."""
    rng = np.random.default_rng(seed)
    negatives, positives = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    keep = int(round(prevalence * len(negatives) / (1 - prevalence)))
    return np.sort(np.concatenate([negatives, rng.choice(positives, min(keep, len(positives)), replace=False)]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["cnn-lstm", "resnet50", "mobilenet-v2", "row-lstm",
                                                         "efficientnet-lite0"])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "chest_xray"))
    parser.add_argument("--out", default=str(REPO / "runs" / "site_standins"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        predictor = load_predictor(str(REPO / "models" / name))
        split = pd.read_csv(REPO / "models" / name / "data_split.csv")
        positive, size = predictor.positive_index, predictor.height
        arrays = {}
        adaptable = bool(batch_norm_layers(predictor.model)) and "adaptation" in predictor.config
        adapted_calibration = Calibration.from_config(predictor.config["adaptation"]["calibration"]) \
            if adaptable else None
        released = batch_norm_statistics(predictor.model) if adaptable else None
        for set_name, split_name in (("V", "validation"), ("H", "holdout_earliest")):
            frame = split[split.split == split_name].reset_index(drop=True)
            labels = (frame.label.to_numpy() == positive).astype(int)
            grays = decode_many_for_model([str(Path(args.data) / p) for p in frame.path], size, size)
            for suffix, perturbation_of in (("", None),
                                            ("P", lambda i: STRONG[np.random.default_rng(i).integers(len(STRONG))])):
                inputs = prepared_inputs(grays, predictor.preprocessing, size, perturbation_of)
                key = set_name + suffix
                arrays[f"{key}_labels"] = labels
                arrays[f"{key}_patients"] = np.array([patient_id_from_filename(p) for p in frame.path])
                logits = np.concatenate([predictor.logits(b) for b in in_batches(inputs, 64)])
                arrays[f"{key}_z"] = log_odds(predictor.calibration, logits, positive)
                if not adaptable:
                    continue
                subsets = {"own": np.arange(len(labels))}
                subsets.update({f"{int(p * 100)}": thinned(labels, p, 0) for p in PREVALENCES})
                for mix, rows in subsets.items():
                    try:
                        reestimate_batch_norm(predictor.model, in_batches(inputs[rows]))
                        logits = np.concatenate([predictor.logits(b) for b in in_batches(inputs[rows], 64)])
                    finally:
                        set_statistics(predictor.model, released)
                    arrays[f"{key}_adapted_{mix}_rows"] = rows
                    arrays[f"{key}_adapted_{mix}_z"] = log_odds(adapted_calibration, logits, positive)
                print(name, key, "done", flush=True)
        np.savez_compressed(out / f"{name}.npz", **arrays)


if __name__ == "__main__":
    main()
