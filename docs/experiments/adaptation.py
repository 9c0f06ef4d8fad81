"""After a model's batch-norm statistics are re-estimated on a new site's images (pneumo.site.adabn), which
calibration and threshold should it use, and does its out-of-distribution check still hold?

Two stand-ins for a new site, both from train/ and never used for fitting weights: the earliest-acquisitions
hold-out, and the same images under one strong acquisition perturbation each (seeded). Each is split by
patient into halves; the network is adapted on one half (labels unused) and scores the other, then the halves
swap and the scores are pooled. Four settings:
- released: the folder as it is;
- adapted, released calibration: the target's statistics, the folder's calibration and threshold;
- source refit: statistics re-estimated on the clean validation images, then the calibration and the Youden
  threshold refitted on the validation split (the same re-estimation on both sides), no target adaptation;
- adapted, source refit: the target's statistics with the source refit's calibration and threshold.
"adapted, source refit (100)" adapts on the half's first 100 images only, in data_split.csv's order, which is by
class: 60 or 61 normal X-rays and 40 or 39 with pneumonia, against 19% normal in the whole half (316 images). It
measures what a site folder of another case mix does to the statistics. The official test set is not read.

    PYTHONPATH=. python docs/experiments/adaptation.py models/cnn-lstm models/resnet50
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pneumo.hub import model_folder
from pneumo.site.adabn import (
    batch_norm_statistics,
    in_batches,
    reestimate_batch_norm,
    set_statistics,
)
from pneumo.training.data import split_by_patient
from pneumo.training.export import fit_on_validation
from pneumo.imaging.decoding import decode_many_for_model
from pneumo.metrics import compute_metrics
from ood_probes import not_chest_xrays
from pneumo.prediction.predictor import Predictor
from pneumo.training.selection import STRONG, prepared_inputs

ROOT = Path("../shared/data/chest_xray").resolve()


def inputs_of(predictor, frame: pd.DataFrame, perturbed: bool = False) -> np.ndarray:
    grays = decode_many_for_model([str(ROOT / p) for p in frame.path], predictor.height, predictor.width)
    rng = np.random.default_rng(0)
    chosen = rng.integers(len(STRONG), size=len(grays))
    return prepared_inputs(grays, predictor.preprocessing, predictor.height,
                           (lambda i: STRONG[chosen[i]]) if perturbed else None)


def logits_and_ood(predictor, images) -> tuple[np.ndarray, np.ndarray]:
    parts = [predictor._logits_and_features(batch) for batch in in_batches(images, 64)]
    logits = np.concatenate([p[0] for p in parts])
    return logits, predictor.ood_scores(np.concatenate([p[1] for p in parts]))


def summary(labels, probabilities, threshold) -> dict:
    m = compute_metrics(labels, probabilities, threshold)
    return {k: round(m[k], 3) for k in ("sensitivity", "specificity", "roc_auc", "expected_calibration_error")}


def study(folder: Path) -> list[dict]:
    predictor = Predictor.from_folder(folder)
    model, positive = predictor.model, predictor.positive_index
    released = batch_norm_statistics(model)
    split = pd.read_csv(folder / model_folder.SPLIT_FILE)
    validation = split[split.split == model_folder.VALIDATION_SPLIT]
    holdout = split[split.split == model_folder.HOLDOUT_SPLIT].reset_index(drop=True)
    holdout["path"] = [str(ROOT / path) for path in holdout.path]  # the split hashes the files
    halves = split_by_patient(holdout, 0.5, seed=0)

    validation_inputs = inputs_of(predictor, validation)
    reestimate_batch_norm(model, in_batches(validation_inputs))
    source, (source_logits, _) = batch_norm_statistics(model), logits_and_ood(predictor, validation_inputs)
    refit, _, refit_threshold, _ = fit_on_validation(source_logits, validation.label.to_numpy(), positive,
                                                      validation.path)
    del validation_inputs
    calibrations = {"released": (predictor.calibration, predictor.threshold),
                    "source refit": (refit, refit_threshold)}
    probes = np.stack([predictor.load_image(data) for data in not_chest_xrays().values()])

    rows = []
    for target, perturbed in (("hold-out", False), ("perturbed hold-out", True)):
        inputs = inputs_of(predictor, holdout, perturbed)
        labels = (holdout.label.to_numpy() == positive).astype(int)
        pooled = {}
        for fit_half, score_half in (halves, halves[::-1]):
            fit_rows, score_rows = fit_half.index.to_numpy(), score_half.index.to_numpy()
            scored = {}
            set_statistics(model, released)
            scored["released"] = logits_and_ood(predictor, inputs[score_rows])
            set_statistics(model, source)
            scored["source statistics"] = logits_and_ood(predictor, inputs[score_rows])
            for name, rows_used in (("adapted", fit_rows), ("adapted (100)", fit_rows[:100])):
                reestimate_batch_norm(model, in_batches(inputs[rows_used]))
                scored[name] = logits_and_ood(predictor, inputs[score_rows])
                if name == "adapted":
                    probe_scores = predictor.ood_scores(predictor._logits_and_features(probes)[1])
            for setting, (network, calibration_name) in {
                    "released": ("released", "released"),
                    "adapted, released calibration": ("adapted", "released"),
                    "source refit": ("source statistics", "source refit"),
                    "adapted, source refit": ("adapted", "source refit"),
                    "adapted, source refit (100)": ("adapted (100)", "source refit")}.items():
                calibration, threshold = calibrations[calibration_name]
                logits, ood = scored[network]
                entry = pooled.setdefault(setting, {"labels": [], "p": [], "ood": [], "threshold": threshold})
                entry["labels"].append(labels[score_rows])
                entry["p"].append(calibration.probabilities(logits)[:, positive])
                entry["ood"].append(ood)
            pooled.setdefault("probes", []).append(probe_scores)
        for setting, entry in pooled.items():
            if setting == "probes":
                continue
            row = {"model": folder.name, "target": target, "setting": setting,
                   **summary(np.concatenate(entry["labels"]), np.concatenate(entry["p"]), entry["threshold"]),
                   "ood_flagged": round(float((np.concatenate(entry["ood"]) > 1).mean()), 3)}
            if setting == "adapted, source refit":
                row["probes_min_ood"] = round(float(np.min(pooled["probes"])), 2)
            rows.append(row)
            print(row, flush=True)
    set_statistics(model, released)
    return rows


if __name__ == "__main__":
    results = pd.DataFrame([row for folder in sys.argv[1:] for row in study(Path(folder))])
    print(results.to_string(index=False))
