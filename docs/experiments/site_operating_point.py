"""Choosing the label-free site operating point and its guard (issue 32) on stand-in sites built from train/.

Reads what docs/experiments/site_standins.py wrote (runs/site_standins/NAME.npz): each bundled model's calibrated
log-odds on the validation split (V), the earliest-acquisitions hold-out (H), and both under one strong
acquisition perturbation per image (VP, HP), as released and after AdaBN on the set itself. The official test set
is not read.

Each stand-in site (H, HP, VP) is thinned to a prevalence (0.10, 0.25, or its own), split by patient into halves;
each half in turn is fitted without labels and the other half is scored with them, as site_eval cross-fits.
Settings compared:
  out_of_the_box       the folder's threshold
  free_mixture         a free two-component Gaussian mixture (sklearn), posterior >= 0.5 (the issue's first try)
  anchored             pneumo.site.operating_point.fit_site, reference from V (clean validation)
  anchored_perturbed   the same, reference from V and VP pooled (validation with acquisition shifts)
  guarded              `anchored`, or out of the box where the guard refuses
  adabn                AdaBN on the site's own images (its mix), the folder's adapted threshold
  adabn_anchored       AdaBN, then fit_site with the adapted network's validation reference
  adabn_mix_check      the check after the step alone (batch_norm_kept): `trusted` = the step stands
  label_free           as pneumo adapt decides: adabn_anchored where both checks and the fit after the step allow
                       it, else the released network's own fit (or its threshold), on the same set

    python docs/experiments/site_operating_point.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pneumo.hub import model_folder  # noqa: E402
from pneumo.metrics import expected_calibration_error  # noqa: E402
from pneumo.prediction.calibration import log_odds_of  # noqa: E402
from pneumo.site.operating_point import SiteReference, batch_norm_allowed, batch_norm_kept, fit_site, \
    thinned_to  # noqa: E402

MODELS = ["cnn-lstm", "resnet50", "mobilenet-v2", "row-lstm", "efficientnet-lite0"]
SITES = ["H", "HP", "VP"]
PREVALENCES = {"10": 0.10, "25": 0.25, "own": None}


def halves(patients: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    unique = np.unique(patients)
    rng = np.random.default_rng(seed)
    first = set(rng.choice(unique, len(unique) // 2, replace=False))
    mask = np.array([p in first for p in patients])
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def free_mixture(z_fit: np.ndarray, z_scored: np.ndarray) -> np.ndarray:
    from sklearn.mixture import GaussianMixture

    mixture = GaussianMixture(2, random_state=0).fit(z_fit[:, None])
    upper = int(np.argmax(mixture.means_[:, 0]))
    return mixture.predict_proba(z_scored[:, None])[:, upper]


def scores(labels, called, probability) -> dict:
    labels = np.asarray(labels, bool)
    return {"sensitivity": called[labels].mean(), "specificity": (~called[~labels]).mean(),
            "ece": expected_calibration_error(labels.astype(int), probability) if probability is not None else np.nan}


def evaluate(name: str, arrays, seeds: int) -> list[dict]:
    config = model_folder.read_config(REPO / "models" / name)
    source_threshold = float(log_odds_of(config["threshold"]))
    reference = SiteReference.from_scores(arrays["V_z"], arrays["V_labels"] == 1)
    pooled = SiteReference.from_scores(np.r_[arrays["V_z"], arrays["VP_z"]],
                                       np.r_[arrays["V_labels"], arrays["VP_labels"]] == 1)
    adaptable = "V_adapted_own_z" in arrays
    if adaptable:
        adapted_reference = SiteReference.from_scores(arrays["V_adapted_own_z"], arrays["V_labels"] == 1)
        adapted_threshold = float(log_odds_of(config["adaptation"]["threshold"]))
    rows = []
    for site in SITES:
        z_all, labels_all, patients_all = arrays[f"{site}_z"], arrays[f"{site}_labels"], arrays[f"{site}_patients"]
        for mix, prevalence in PREVALENCES.items():
            for seed in range(seeds):
                keep = np.arange(len(z_all)) if prevalence is None else thinned_to(labels_all == 1, prevalence, seed)
                z, labels, patients = z_all[keep], labels_all[keep] == 1, patients_all[keep]
                first, second = halves(patients, seed)
                pooled_results = {}
                for fitting, scored in ((first, second), (second, first)):
                    out = {"out_of_the_box": (z[scored] >= source_threshold, None)}
                    p = free_mixture(z[fitting], z[scored])
                    out["free_mixture"] = (p >= 0.5, p)
                    for key, ref in (("anchored", reference), ("anchored_perturbed", pooled)):
                        fit = fit_site(z[fitting], ref, source_threshold, seed=seed, bootstrap=30)
                        p = fit.probability_map.probabilities(z[scored])
                        out[key] = (z[scored] >= fit.threshold_log_odds, p, fit)
                        if key == "anchored":
                            out["guarded"] = out[key] if fit.trusted else out["out_of_the_box"] + (fit,)
                    for key, result in out.items():
                        entry = pooled_results.setdefault(key, {"labels": [], "called": [], "p": [], "fits": []})
                        entry["labels"].append(labels[scored])
                        entry["called"].append(result[0])
                        entry["p"].append(result[1] if result[1] is not None else np.full(len(scored), np.nan))
                        if len(result) > 2:
                            entry["fits"].append(result[2])
                for key, entry in pooled_results.items():
                    labels_scored, called = np.concatenate(entry["labels"]), np.concatenate(entry["called"])
                    p = np.concatenate(entry["p"])
                    row = {"model": name, "site": site, "mix": mix, "seed": seed, "setting": key,
                           "prevalence": labels_scored.mean(),
                           **scores(labels_scored, called, None if np.isnan(p).any() else p)}
                    if entry["fits"]:
                        row["estimated_prevalence"] = np.mean([f.prevalence for f in entry["fits"]])
                        row["trusted"] = np.mean([f.trusted for f in entry["fits"]])
                        row["reasons"] = "; ".join(sorted({f.reason for f in entry["fits"] if f.reason}))[:200]
                    rows.append(row)
            if adaptable and f"{site}_adapted_{mix}_z" in arrays and seed == seeds - 1:
                keep = arrays[f"{site}_adapted_{mix}_rows"]
                z, labels = arrays[f"{site}_adapted_{mix}_z"], labels_all[keep] == 1
                rows.append({"model": name, "site": site, "mix": mix, "seed": 0, "setting": "adabn",
                             "prevalence": labels.mean(), **scores(labels, z >= adapted_threshold, None)})
                released_fit = fit_site(z_all[keep], reference, source_threshold, bootstrap=30)
                why_not = batch_norm_allowed(released_fit, reference)
                rows.append({"model": name, "site": site, "mix": mix, "seed": 0, "setting": "adabn_allowed",
                             "prevalence": labels.mean(), "trusted": float(why_not is None),
                             "reasons": why_not or ""})
                fit = fit_site(z, adapted_reference, adapted_threshold, bootstrap=30)
                called = z >= (fit.threshold_log_odds if fit.trusted else adapted_threshold)
                rows.append({"model": name, "site": site, "mix": mix, "seed": 0, "setting": "adabn_anchored",
                             "prevalence": labels.mean(),
                             **scores(labels, called, fit.probability_map.probabilities(z) if fit.trusted else None),
                             "estimated_prevalence": fit.prevalence, "trusted": float(fit.trusted),
                             "reasons": fit.reason or ""})
                undone = (batch_norm_kept(released_fit, fit, reference) if released_fit.trusted and fit.trusted
                          else "a fit not trusted")
                rows.append({"model": name, "site": site, "mix": mix, "seed": 0, "setting": "adabn_mix_check",
                             "prevalence": labels.mean(), "estimated_prevalence": fit.prevalence,
                             "trusted": float(undone is None), "reasons": undone or ""})
                if why_not is None and undone is None:
                    decided = (called, fit.probability_map.probabilities(z), fit)
                else:
                    z_released = z_all[keep]
                    decided = ((z_released >= released_fit.threshold_log_odds,
                                released_fit.probability_map.probabilities(z_released), released_fit)
                               if released_fit.trusted else (z_released >= source_threshold, None, released_fit))
                rows.append({"model": name, "site": site, "mix": mix, "seed": 0, "setting": "label_free",
                             "prevalence": labels.mean(), **scores(labels, decided[0], decided[1]),
                             "estimated_prevalence": decided[2].prevalence,
                             "trusted": float(why_not is None and undone is None),
                             "reasons": why_not or undone or ""})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--out", default=str(REPO / "runs" / "site_standins" / "results.csv"))
    args = parser.parse_args()
    rows = []
    for name in args.models:
        path = REPO / "runs" / "site_standins" / f"{name}.npz"
        if path.exists():
            rows += evaluate(name, np.load(path), args.seeds)
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out, index=False)
    summary = frame.groupby(["model", "site", "mix", "setting"], sort=False)[
        ["prevalence", "sensitivity", "specificity", "ece", "estimated_prevalence", "trusted"]].mean()
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 500)
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
