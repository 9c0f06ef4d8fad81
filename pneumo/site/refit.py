"""Refit a model to a new site: calibration and operating points from the site's own labeled X-rays.

    pneumo calibrate models/resnet50 --data LABELED_FOLDER --out models/resnet50-site

A model trained on one hospital's X-rays is often miscalibrated on another's: its probabilities are too
confident and its threshold calls too many healthy children ill (our own official test set shows it).
Clinical deployments fix the operating point on local data; this does the same, leaving the network
untouched. The labeled folder (NORMAL/ and PNEUMONIA/ subfolders, any depth) is split by patient
(patient ids from the file names, as in training; one patient per file otherwise) into a fitting part
and a hold-out. The calibration (temperature and class bias) and both operating points are fitted on
the first; the hold-out measures the model before and after, with 95% bootstrap intervals. The new folder records where its
calibration came from (`site_calibration` in pneumo.json) and its hold-out metrics
(metrics_site_holdout.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from ..hub import model_folder
from ..prediction.calibration import choose_threshold, fit_calibration, threshold_for_sensitivity
from ..cli import command, fraction
from ..training.data import check_fraction, list_labeled_images, readable_batches, split_by_patient
from ..errors import DataFolderError, ModelLoadError
from ..hub.loading import load_predictor
from ..metrics import expected_calibration_error, full_metrics, summary_line
from ..hub.model_card import write_model_card

OPERATING_POINTS = {
    "youden": ("maximum Youden's J (sensitivity + specificity - 1) on the site's fitting part",
               lambda labels, probabilities: choose_threshold(labels, probabilities)),
    "sensitivity_95": ("the highest threshold with sensitivity >= 0.95 on the site's fitting part",
                       lambda labels, probabilities: threshold_for_sensitivity(labels, probabilities, 0.95)),
}


def site_logits(predictor, paths: list[str], batch_size: int = 32) -> tuple[np.ndarray, list[str]]:
    """Class scores of the readable images, and the files that could not be read (with the reason)."""
    logits, skipped = [], []
    for images, _, unreadable in readable_batches(paths, predictor.load_image, predictor.input_shape, batch_size):
        skipped += unreadable
        if len(images):
            logits.append(predictor.logits(images))
    width = len(predictor.class_names)
    return (np.concatenate(logits) if logits else np.zeros((0, width))), skipped


def fit_site_calibration(logits, labels, positive_index: int, operating_point: str | None = None):
    """The calibration and operating points fitted on a site's labeled images (their logits and class indices),
    and which operating point decides: the source's (`operating_point`), where it is one of ours."""
    labels = np.asarray(labels)
    calibration = fit_calibration(logits, labels)
    probabilities = calibration.probabilities(logits)[:, positive_index]
    positives = (labels == positive_index).astype(int)
    operating_points = {name: fit(positives, probabilities) for name, (_, fit) in OPERATING_POINTS.items()}
    return calibration, operating_points, operating_point if operating_point in operating_points else "youden"


def refit(source: str, data, out, holdout_fraction: float = 0.3, seed: int = 0) -> dict:
    """Write `out`: the `source` model with calibration and operating points fitted on `data`. Returns the
    record stored as `site_calibration`."""
    check_fraction(holdout_fraction, "holdout_fraction")  # before the model loads and the images are scored
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DataFolderError(f"{out}: already exists and is not empty; choose a new --out folder")
    predictor = load_predictor(source)
    if (predictor.config.get("site_adaptation") or {}).get("operating_point"):
        raise ModelLoadError(f"{source}: adapted to a site without labels; refit its source "
                             f"({predictor.config['site_adaptation']['source']}) with these labels instead")
    if predictor.model is None:
        raise ModelLoadError(f"{source}: an ensemble; refit it with pneumo ensemble, or refit its members")
    images = list_labeled_images(data, predictor.class_names)
    logits, skipped = site_logits(predictor, list(images.path))
    readable = images[~images.path.isin([error.split(": ", 1)[0] for error in skipped])].reset_index(drop=True)
    if len(readable) != len(logits):  # a file named in an error message that does not start with its path
        raise DataFolderError(f"{data}: could not match {len(skipped)} unreadable files to their paths")
    readable["row"] = np.arange(len(readable))
    fitting, holdout = split_by_patient(readable, holdout_fraction, seed)
    for part, name in ((fitting, "fitting part"), (holdout, "hold-out")):
        if part.label.nunique() < len(predictor.class_names):
            raise DataFolderError(f"{data}: the {name} lacks a class ({len(part)} images); label more patients")

    positive = predictor.positive_index
    labels = (readable.label.to_numpy() == positive).astype(int)
    calibration, operating_points, operating_point = fit_site_calibration(
        logits[fitting.row], readable.label.to_numpy()[fitting.row], positive, predictor.config.get("operating_point"))
    site_probabilities = calibration.probabilities(logits)[:, positive]
    threshold = operating_points[operating_point]

    source_probabilities = predictor.calibration.probabilities(logits)[:, positive]
    holdout_labels = labels[holdout.row]
    after = full_metrics(holdout_labels, site_probabilities[holdout.row], threshold)
    after["split"] = "site hold-out (patient-level, never used for fitting)"
    after["before_refit"] = full_metrics(holdout_labels, source_probabilities[holdout.row], predictor.threshold)
    record = {
        "source": predictor.reference, "source_revision": predictor.revision,
        "source_model_sha256": model_folder.model_file_sha256(predictor.folder),
        "source_calibration": predictor.calibration.to_config(predictor.config.get("calibration", {}).get("fitted_on", "")), "source_threshold": predictor.threshold,
        "data": str(data), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "fitting_images": len(fitting), "fitting_patients": int(fitting.patient.nunique()),
        "holdout_images": len(holdout), "holdout_patients": int(holdout.patient.nunique()),
        "skipped_files": len(skipped),
        "holdout_expected_calibration_error": {
            "before": expected_calibration_error(holdout_labels, source_probabilities[holdout.row]),
            "after": after["expected_calibration_error"]},
    }

    out.mkdir(parents=True, exist_ok=True)
    model_folder.save_network(predictor.model, out)
    config = {key: value for key, value in predictor.config.items() if key != "model_file"}
    if config.get("out_of_distribution"):
        shutil.copy(predictor.folder / config["out_of_distribution"]["file"], out)
    config.update(name=out.name, threshold=threshold, operating_point=operating_point,
                  operating_points=operating_points, threshold_method=OPERATING_POINTS[operating_point][0],
                  calibration=calibration.to_config(f"site data ({record['fitting_images']} images)"),
                  site_calibration=record)
    model_folder.write_config(out, config)
    model_folder.write_metrics(out, model_folder.SITE_HOLDOUT_SPLIT, after)
    write_model_card(out)
    return record


@command("pneumo calibrate")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pneumo calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a model folder or Hub reference OWNER/NAME[@REVISION]")
    parser.add_argument("--data", required=True, help="the site's labeled X-rays (NORMAL/ and PNEUMONIA/ subfolders)")
    parser.add_argument("--out", required=True, help="the new model folder to write")
    parser.add_argument("--holdout-fraction", type=fraction, default=0.3,
                        help="patients kept out of the fit to measure it (default 0.3)")
    args = parser.parse_args(argv)
    record = refit(args.model, args.data, args.out, args.holdout_fraction)
    metrics = model_folder.read_metrics(args.out, model_folder.SITE_HOLDOUT_SPLIT)
    print(json.dumps({"out": args.out, **record}, indent=2))
    for label, values in (("before", metrics["before_refit"]), ("after", metrics)):
        print(f"hold-out {label}: {summary_line(values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
