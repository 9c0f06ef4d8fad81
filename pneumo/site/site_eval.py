"""What a new site gains from adapting a model without labels and from refitting it with labels, cross-fitted.

    pneumo site-eval models/resnet50 --data LABELED_FOLDER [--out RESULTS.json] [--record]

The labeled folder (NORMAL/ and PNEUMONIA/ subfolders, any depth) is split by patient into two halves. Each
half in turn is the fitting half: its images adapt the network, its labels refit the calibration, and the
other half is scored. The two scored halves are pooled, so every image is scored once, by a model that never
saw it. Four settings:
1. out of the box: the folder as released;
2. adapted without labels: batch-norm statistics from the fitting half's images (pneumo.site.adapt), with the
   folder's calibration for adapted networks;
3. refit with labels: calibration and operating point fitted on the fitting half (pneumo.site.refit's fit);
4. both: adapted, then refitted on the fitting half's adapted scores.
A network without batch normalisation has settings 1 and 3 only. Metrics carry 95% bootstrap intervals; each
half decides at its own threshold (both are recorded). The images are held in memory (about 0.6 MB each at
224 px): a few thousand at most.

`--record` is for the official test set, once per released model: the results go to the model folder
(`site_eval_test.json`, which the model card shows) and each setting is logged in `test_scorings.csv`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np

from ..hub import model_folder
from .adabn import (
    adapt_predictor,
    batch_norm_layers,
    batch_norm_statistics,
    in_batches,
    set_statistics,
)
from .refit import fit_site_calibration
from ..cli import command
from ..training.data import list_labeled_images, readable_batches, split_by_patient
from ..errors import AdaptationError, DataFolderError
from ..files import write_json
from ..hub.loading import load_predictor
from ..metrics import full_metrics, summary_line
from ..hub.model_card import write_model_card

SETTINGS = {
    "out_of_the_box": "out of the box",
    "adapted": "adapted without labels",
    "refit": "refit with labels",
    "adapted_and_refit": "adapted, then refit with labels",
}


def readable_inputs(predictor, frame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Model inputs of the files in `frame` that decode, which rows those are, and why the others did not."""
    batches = list(readable_batches(frame.path, predictor.load_image, predictor.input_shape, 64))
    if not any(len(rows) for _, rows, _ in batches):
        raise DataFolderError("no readable images")
    return (np.concatenate([images for images, _, _ in batches]), np.concatenate([rows for _, rows, _ in batches]),
            [reason for _, _, unreadable in batches for reason in unreadable])


def logits_of(predictor, images: np.ndarray) -> np.ndarray:
    return np.concatenate([predictor.logits(batch) for batch in in_batches(images, 64)])


def cross_fitted(predictor, data, seed: int = 0) -> dict:
    """The four settings' pooled metrics on `data` (see the module's docstring), with the split's sizes."""
    if predictor.model is None:
        raise AdaptationError(f"{predictor.name}: an ensemble; evaluate its members")
    frame = list_labeled_images(data, predictor.class_names)
    inputs, rows, skipped = readable_inputs(predictor, frame)
    frame = frame.iloc[rows].reset_index(drop=True)
    frame["row"] = np.arange(len(frame))
    first, second = split_by_patient(frame, 0.5, seed)
    for half in (first, second):
        if half.label.nunique() < len(predictor.class_names):
            raise DataFolderError(f"{data}: a half lacks a class ({len(half)} images); label more patients")
    adaptable = bool(batch_norm_layers(predictor.model))
    positive, classes = predictor.positive_index, frame.label.to_numpy()
    released = (batch_norm_statistics(predictor.model), predictor.calibration, predictor.threshold,
                predictor.config)
    pooled = {key: {"rows": [], "p": [], "threshold": [], "thresholds": []}
              for key in SETTINGS if adaptable or key in ("out_of_the_box", "refit")}

    def add(key, scored, logits, calibration, threshold):
        entry = pooled[key]
        entry["rows"].append(scored.row.to_numpy())
        entry["p"].append(calibration.probabilities(logits)[:, positive])
        entry["threshold"].append(np.full(len(scored), threshold))
        entry["thresholds"].append(float(threshold))

    try:
        for fitting, scored in ((first, second), (second, first)):
            set_statistics(predictor.model, released[0])
            fit_logits, scored_logits = logits_of(predictor, inputs[fitting.row]), logits_of(predictor,
                                                                                             inputs[scored.row])
            add("out_of_the_box", scored, scored_logits, released[1], released[2])
            calibration, points, chosen = fit_site_calibration(fit_logits, classes[fitting.row], positive,
                                                               released[3].get("operating_point"))
            add("refit", scored, scored_logits, calibration, points[chosen])
            if not adaptable:
                continue
            adapt_predictor(predictor, in_batches(inputs[fitting.row]))
            fit_logits, scored_logits = logits_of(predictor, inputs[fitting.row]), logits_of(predictor,
                                                                                             inputs[scored.row])
            add("adapted", scored, scored_logits, predictor.calibration, predictor.threshold)
            calibration, points, chosen = fit_site_calibration(fit_logits, classes[fitting.row], positive,
                                                               predictor.config.get("operating_point"))
            add("adapted_and_refit", scored, scored_logits, calibration, points[chosen])
    finally:  # the predictor leaves as it came
        set_statistics(predictor.model, released[0])
        predictor.calibration, predictor.threshold, predictor.config = released[1:]

    labels = (classes == positive).astype(int)
    results = {}
    for key, entry in pooled.items():
        order = np.concatenate(entry["rows"])
        metrics = full_metrics(labels[order], np.concatenate(entry["p"]), np.concatenate(entry["threshold"]))
        metrics.update(setting=SETTINGS[key], thresholds_of_the_halves=entry["thresholds"])
        results[key] = metrics
    return {"model": predictor.name, "source_model_sha256": model_folder.model_file_sha256(predictor.folder),
            "data": str(data), "images": len(frame), "patients": int(frame.patient.nunique()),
            "halves": [len(first), len(second)], "skipped_files": len(skipped), "seed": seed,
            "adaptable": adaptable, "settings": results}


def record(folder, results: dict) -> None:
    """Keep the results in the model folder and log each setting's scoring of the official test set."""
    when = dt.datetime.now(dt.UTC)
    write_json(Path(folder) / model_folder.SITE_EVAL_FILE, {**results, "date": when.isoformat(timespec="seconds")})
    for metrics in results["settings"].values():
        model_folder.log_test_scoring(folder, metrics, f"{results['data']} (site_eval, cross-fitted: "
                                                       f"{metrics['setting']})", when)
    write_model_card(folder)


@command("pneumo site-eval")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pneumo site-eval", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a model folder or Hub reference OWNER/NAME[@REVISION]")
    parser.add_argument("--data", required=True, help="the site's labeled X-rays (NORMAL/ and PNEUMONIA/ subfolders)")
    parser.add_argument("--out", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--seed", type=int, default=0, help="the patient split's seed (default 0)")
    parser.add_argument("--record", action="store_true",
                        help="the official test set: keep the results in the model folder and log the scorings")
    args = parser.parse_args(argv)
    predictor = load_predictor(args.model)
    results = cross_fitted(predictor, args.data, args.seed)
    if args.record:
        record(predictor.folder, results)
    if args.out:
        write_json(args.out, results)
    print(f"{results['model']} on {results['data']}: {results['images']} images, {results['patients']} patients, "
          f"halves {results['halves']}" + ("" if results["adaptable"] else "; no batch normalisation to adapt"))
    for metrics in results["settings"].values():
        print(f"  {metrics['setting']:<32} {summary_line(metrics)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
