"""What a new site gains from adapting a model without labels and from refitting it with labels, cross-fitted.

    pneumo site-eval models/resnet50 --data LABELED_FOLDER [--prevalence 0.1] [--out RESULTS.json] [--record]

The labeled folder (NORMAL/ and PNEUMONIA/ subfolders, any depth) is split by patient into two halves. Each
half in turn is the fitting half: its images adapt the model, its labels refit the calibration, and the other
half is scored. The two scored halves are pooled, so every image is scored once, by a model that never saw it.
The settings:
1. out of the box: the folder as released;
2. batch-norm step: statistics from the fitting half's images (AdaBN), with the folder's calibration for
   adapted networks, whatever the guard says;
3. site operating point: fitted without labels on the fitting half's scores (pneumo.site.operating_point),
   applied whatever the guard says;
4. batch-norm step, then site operating point: the same after step 2;
5. label-free, as `pneumo adapt` decides: each step only where its guard trusts it;
6. refit with labels: calibration and operating point fitted on the fitting half (pneumo calibrate's fit);
7. batch-norm step, then refit with labels.
A network without batch normalisation has settings 1, 3, 5 and 6. `--prevalence P` first thins one class of the
folder at random (seeded) so that pneumonia makes P of it: a screening site has few. Metrics carry 95% bootstrap
intervals; each half decides at its own threshold (both are recorded), and the label-free settings record their
fits' estimated prevalences and the guard's verdicts. The images are held in memory (about 0.6 MB each at 224 px):
a few thousand at most.

`--record` is for the official test set, once per released model and prevalence: the results go to the model
folder (`site_eval_test.json`, keyed by prevalence, which the model card shows) and each setting is logged in
`test_scorings.csv`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np

from ..cli import command, fraction
from ..errors import AdaptationError, DataFolderError
from ..files import write_json
from ..hub import model_folder
from ..hub.loading import load_predictor
from ..hub.model_card import write_model_card
from ..metrics import full_metrics, summary_line
from ..prediction.calibration import SiteCalibration, log_odds_of
from ..training.data import list_labeled_images, readable_batches, split_by_patient
from .adabn import adapt_predictor, batch_norm_layers, in_batches
from .adapt import fit_to_site, refuse_adapted, restore, site_reference, state_of
from .operating_point import fit_site, thinned_to
from .refit import fit_site_calibration

SETTINGS = {
    "out_of_the_box": "out of the box",
    "adapted": "batch-norm step (no labels)",
    "site_operating_point": "site operating point (no labels)",
    "adapted_site_operating_point": "batch-norm step, then site operating point",
    "label_free_guarded": "label-free, as pneumo adapt decides",
    "refit": "refit with labels",
    "adapted_and_refit": "batch-norm step, then refit with labels",
}
BATCH_NORM_SETTINGS = ("adapted", "adapted_site_operating_point", "adapted_and_refit")


def readable_inputs(predictor, frame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Model inputs of the files in `frame` that decode, which rows those are, and why the others did not."""
    batches = list(readable_batches(frame.path, predictor.load_image, predictor.input_shape, 64))
    if not any(len(rows) for _, rows, _ in batches):
        raise DataFolderError("no readable images")
    return (np.concatenate([images for images, _, _ in batches]), np.concatenate([rows for _, rows, _ in batches]),
            [reason for _, _, unreadable in batches for reason in unreadable])


def logits_of(predictor, images: np.ndarray) -> np.ndarray:
    return np.concatenate([predictor.logits(batch) for batch in in_batches(images, 64)])


def at_site_operating_point(predictor, fit_logits, scored_logits, network: str):
    """P(positive) of the scored images at the site operating point fitted, unguarded, on the fitting images'
    scores (logits through the network as it is now), its threshold, and the fit."""
    positive = predictor.positive_index
    z = log_odds_of(predictor.calibration.probabilities(fit_logits)[:, positive])
    fit = fit_site(z, site_reference(predictor, network), float(log_odds_of(predictor.threshold)))
    calibration = SiteCalibration(predictor.calibration, fit.probability_map, positive)
    return calibration.probabilities(scored_logits)[:, positive], fit


def cross_fitted(predictor, data, seed: int = 0, prevalence: float | None = None) -> dict:
    """Every setting's pooled metrics on `data` (see the module's docstring), with the split's sizes."""
    if predictor.model is None:
        raise AdaptationError(f"{predictor.name}: an ensemble; evaluate its members")
    refuse_adapted(predictor)
    frame = list_labeled_images(data, predictor.class_names)
    inputs, rows, skipped = readable_inputs(predictor, frame)
    frame = frame.iloc[rows].reset_index(drop=True)
    frame["row"] = np.arange(len(frame))
    positive, classes = predictor.positive_index, frame.label.to_numpy()
    if prevalence is not None:
        frame = frame.iloc[thinned_to(classes == positive, prevalence, seed)].reset_index(drop=True)
    first, second = split_by_patient(frame, 0.5, seed)
    for half in (first, second):
        if half.label.nunique() < len(predictor.class_names):
            raise DataFolderError(f"{data}: a half lacks a class ({len(half)} images); label more patients")
    # The batch-norm settings run for every network the step applies to, refused by its validation evidence or not.
    adaptable = bool(batch_norm_layers(predictor.model)) and bool(predictor.config.get("adaptation"))
    site_ready = bool(predictor.config.get("site_reference"))
    released = state_of(predictor)
    pooled = {key: {"rows": [], "p": [], "threshold": [], "thresholds": [], "fits": []} for key in SETTINGS
              if (adaptable or key not in BATCH_NORM_SETTINGS)
              and (site_ready or key not in ("site_operating_point", "adapted_site_operating_point",
                                             "label_free_guarded"))}

    def add(key, scored, p, threshold, fit=None):
        entry = pooled[key]
        entry["rows"].append(scored.row.to_numpy())
        entry["p"].append(p)
        entry["threshold"].append(np.full(len(scored), threshold))
        entry["thresholds"].append(float(threshold))
        if fit is not None:
            entry["fits"].append({"estimated_prevalence": round(fit.prevalence, 4),
                                  "prevalence_interval": [round(v, 4) for v in fit.prevalence_interval],
                                  "verdict": "trusted" if fit.trusted else "refused", "reason": fit.reason})

    def refit_p(fit_logits, fitting, scored_logits):
        calibration, points, chosen = fit_site_calibration(fit_logits, classes[fitting.row], positive,
                                                           predictor.config.get("operating_point"))
        return calibration.probabilities(scored_logits)[:, positive], points[chosen]

    try:
        for fitting, scored in ((first, second), (second, first)):
            fit_images, scored_images = inputs[fitting.row], inputs[scored.row]
            fit_logits, scored_logits = logits_of(predictor, fit_images), logits_of(predictor, scored_images)
            add("out_of_the_box", scored, predictor.calibration.probabilities(scored_logits)[:, positive],
                predictor.threshold)
            add("refit", scored, *refit_p(fit_logits, fitting, scored_logits))
            if site_ready:
                p, fit = at_site_operating_point(predictor, fit_logits, scored_logits, "released")
                add("site_operating_point", scored, p, fit.threshold, fit)
                record = fit_to_site(predictor, lambda: in_batches(fit_images), least_images=0)
                guarded_logits = logits_of(predictor, scored_images) if record["batch_norm"]["applied"] \
                    else scored_logits
                add("label_free_guarded", scored, predictor.calibration.probabilities(guarded_logits)[:, positive],
                    predictor.threshold)
                pooled["label_free_guarded"]["fits"].append(
                    {"batch_norm": record["batch_norm"]["applied"], "why_not": record["batch_norm"]["why_not"],
                     **{key: record["operating_point"][key] for key in ("prevalence", "verdict", "reason")}})
                restore(predictor, released)
            if not adaptable:
                continue
            adapt_predictor(predictor, in_batches(fit_images))
            fit_logits, scored_logits = logits_of(predictor, fit_images), logits_of(predictor, scored_images)
            add("adapted", scored, predictor.calibration.probabilities(scored_logits)[:, positive],
                predictor.threshold)
            if site_ready:
                p, fit = at_site_operating_point(predictor, fit_logits, scored_logits, "adapted")
                add("adapted_site_operating_point", scored, p, fit.threshold, fit)
            add("adapted_and_refit", scored, *refit_p(fit_logits, fitting, scored_logits))
            restore(predictor, released)
    finally:  # the predictor leaves as it came
        restore(predictor, released)

    labels = (classes == positive).astype(int)
    results = {}
    for key, entry in pooled.items():
        order = np.concatenate(entry["rows"])
        metrics = full_metrics(labels[order], np.concatenate(entry["p"]), np.concatenate(entry["threshold"]))
        metrics.update(setting=SETTINGS[key], thresholds_of_the_halves=entry["thresholds"])
        if entry["fits"]:
            metrics["fits_of_the_halves"] = entry["fits"]
        results[key] = metrics
    return {"model": predictor.name, "source_model_sha256": model_folder.model_file_sha256(predictor.folder),
            "data": str(data), "images": len(frame), "patients": int(frame.patient.nunique()),
            "prevalence": float((frame.label.to_numpy() == positive).mean()),
            "thinned_to": prevalence, "halves": [len(first), len(second)], "skipped_files": len(skipped),
            "seed": seed, "adaptable": adaptable, "settings": results}


def prevalence_key(prevalence: float | None) -> str:
    return "own" if prevalence is None else f"{prevalence:g}"


def record(folder, results: dict) -> None:
    """Keep the results in the model folder (beside those at other prevalences) and log each setting's scoring of
    the official test set."""
    when = dt.datetime.now(dt.UTC)
    kept = model_folder.read_site_eval(folder)
    kept[prevalence_key(results["thinned_to"])] = {**results, "date": when.isoformat(timespec="seconds")}
    write_json(Path(folder) / model_folder.SITE_EVAL_FILE, {"at_prevalence": kept})
    mix = "" if results["thinned_to"] is None else f", thinned to prevalence {results['thinned_to']:g}"
    for metrics in results["settings"].values():
        model_folder.log_test_scoring(folder, metrics, f"{results['data']} (site_eval, cross-fitted{mix}: "
                                                       f"{metrics['setting']})", when)
    write_model_card(folder)


@command("pneumo site-eval")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pneumo site-eval", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a model folder or Hub reference OWNER/NAME[@REVISION]")
    parser.add_argument("--data", required=True, help="the site's labeled X-rays (NORMAL/ and PNEUMONIA/ subfolders)")
    parser.add_argument("--prevalence", type=fraction,
                        help="thin one class first (seeded) so that pneumonia makes this share of the folder, "
                             "e.g. 0.1 for a screening site (default: the folder's own)")
    parser.add_argument("--out", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--seed", type=int, default=0, help="the patient split's and the thinning's seed (default 0)")
    parser.add_argument("--record", action="store_true",
                        help="the official test set: keep the results in the model folder and log the scorings")
    args = parser.parse_args(argv)
    predictor = load_predictor(args.model)
    results = cross_fitted(predictor, args.data, args.seed, args.prevalence)
    if args.record:
        record(predictor.folder, results)
    if args.out:
        write_json(args.out, results)
    print(f"{results['model']} on {results['data']}: {results['images']} images (prevalence "
          f"{results['prevalence']:.2f}), {results['patients']} patients, halves {results['halves']}"
          + ("" if results["adaptable"] else "; no batch-norm step"))
    for metrics in results["settings"].values():
        fits = metrics.get("fits_of_the_halves", [])
        verdicts = ("; fits: " + ", ".join(f"{fit.get('estimated_prevalence', fit.get('prevalence')):.2f} "
                                           f"{fit['verdict']}" for fit in fits)) if fits else ""
        print(f"  {metrics['setting']:<44} {summary_line(metrics)}{verdicts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
