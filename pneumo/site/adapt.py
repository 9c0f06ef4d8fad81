"""Adapt a model to a new site without labels, from the site's own X-rays.

    pneumo adapt models/resnet50 --images SITE_FOLDER --out models/resnet50-site
    pneumo adapt models/resnet50 --fit-source ../shared/data/chest_xray   # once per model folder

A model trained on one hospital's X-rays calls many of another's healthy children ill. Two label-free steps
answer it, each taken only where its guard trusts it (any folder of the site's images will do: searched
recursively, labels ignored, unreadable files skipped):
1. the batch-norm step (AdaBN, Li et al. 2016; pneumo.site.adabn): the network's batch-norm statistics
   re-estimated on the site's X-rays, with the calibration and operating point its source fitted for an
   adapted network (`adaptation` in pneumo.json). Taken only for a network with batch normalisation that its
   validation evidence does not refuse, at a site whose case mix (estimated from the site's own scores) is
   near validation's: the statistics describe the mix as much as the machine. Undone where the fit after it
   cannot be trusted, or moved the estimated prevalence toward validation's (the statistics took up the mix);
2. the site operating point (pneumo.site.operating_point): a mixture of the site's own scores, fitted without
   labels, gives the probability shown at the site (calibrated there), the estimated prevalence with its
   interval and the threshold. Where the guard refuses the fit, the folder keeps the operating point it had.
The new folder records what was done, why, and from what (`site_adaptation` in pneumo.json): the source model,
its hash, the folder, the image count, the date, the batch-norm step and the site operating point with the
guard's checks. `--fit-source` adds what both steps compare with (`adaptation` and `site_reference`: validation's
class shapes) to a folder exported before they existed, from the training data and the folder's data_split.csv.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..batch.scoring import discover
from ..cli import DATA_VARIABLE, command, dataset_root
from ..errors import AdaptationError, DataFolderError, ModelLoadError
from ..hub import model_folder
from ..hub.loading import load_predictor
from ..hub.model_card import write_model_card
from ..prediction.calibration import Calibration
from ..training.data import readable_batches
from ..training.export import fit_adaptation_reference, fit_site_reference, validation_pass
from .adabn import (
    METHOD,
    adapt_predictor,
    batch_norm_layers,
    batch_norm_statistics,
    set_statistics,
    why_not_adapted,
)
from ..prediction.calibration import SiteCalibration, log_odds_of
from .operating_point import SiteReference, batch_norm_allowed, batch_norm_kept, fit_site

# A floor, not a recommendation. The statistics are those of the folder's case mix as much as of its machine:
# docs/experiments/adaptation.py adapted on 100 hold-out X-rays that were 60% normal, against 19% in the
# images scored, and specificity fell from about 0.96 to 0.15-0.39. A site's folder should hold its usual mix.
MIN_IMAGES = 100

def why_not_batch_norm(predictor) -> str | None:
    """Why `predictor`'s network is not to be batch-norm adapted, whatever the site; None if it may be."""
    if predictor.model is None:
        return "an ensemble (adapt its members)"
    if not batch_norm_layers(predictor.model):
        return "its network has no batch normalisation, so there are no statistics to adapt"
    if not predictor.config.get("adaptation"):
        return ("its folder has no calibration for an adapted network (add it with "
                f"pneumo adapt {predictor.folder} --fit-source TRAINING_DATA)")
    return why_not_adapted(predictor.config["adaptation"])


def site_reference(predictor, network: str) -> SiteReference:
    """Validation's class shapes for `network` ("released" or "adapted"), from the folder's `site_reference`."""
    block = (predictor.config.get("site_reference") or {}).get(network)
    if not block:
        raise AdaptationError(f"{predictor.name}: its folder has no validation class shapes for a site operating "
                              f"point; add them with pneumo adapt {predictor.folder} --fit-source TRAINING_DATA")
    return SiteReference.from_config(block)


def usable_batches(predictor, paths: list[Path], skipped: list[str], batch_size: int = 32):
    """The model inputs of every readable file in `paths`, batch by batch; each unreadable file's reason is
    appended to `skipped`."""
    for images, _, unreadable in readable_batches(paths, predictor.load_image, predictor.input_shape, batch_size):
        skipped += unreadable
        if len(images):
            yield images


def site_scores(predictor, batches) -> np.ndarray:
    """The calibrated log-odds of P(positive) that `predictor` (as it is now) gives each model input."""
    scores = [log_odds_of(predictor.probabilities(batch)[:, predictor.positive_index]) for batch in batches]
    return np.concatenate(scores) if scores else np.zeros(0)


def apply_site_fit(predictor, fit) -> None:
    """Decide with a trusted site operating point: the site's probability map after the calibration in effect,
    and the site's threshold on that probability."""
    predictor.calibration = SiteCalibration(predictor.calibration, fit.probability_map, predictor.positive_index)
    predictor.threshold = fit.threshold
    predictor.config = {**predictor.config, "threshold": fit.threshold,
                        "threshold_method": "the site operating point (site_adaptation.operating_point)"}


def fit_to_site(predictor, site_batches, least_images: int = MIN_IMAGES) -> dict:
    """Adapt `predictor` in place to the site whose X-rays `site_batches()` yields (a fresh iterator of model
    inputs at each call: the images are read once per step), as the module's docstring says; returns the record
    of what was done (`site_adaptation`), which its config now holds too."""
    refuse_adapted(predictor)
    released_reference = site_reference(predictor, "released")
    scores = site_scores(predictor, site_batches())
    if len(scores) < least_images:
        raise AdaptationError(f"{len(scores)} usable X-rays: adapting to a site needs at least {least_images}")
    fit = fit_site(scores, released_reference, float(log_odds_of(predictor.threshold)))
    batch_norm = {"method": METHOD, "applied": False,
                  "why_not": why_not_batch_norm(predictor) or batch_norm_allowed(fit, released_reference)}
    network = "released"
    if batch_norm["why_not"] is None:
        before = state_of(predictor)
        try:
            adapt_predictor(predictor, site_batches(), least_images)
            adapted_fit = fit_site(site_scores(predictor, site_batches()), site_reference(predictor, "adapted"),
                                   float(log_odds_of(predictor.threshold)))
        except BaseException:  # the predictor leaves as it came, as when the step is refused
            restore(predictor, before)
            raise
        undone = (f"after it, the site operating point could not be trusted ({adapted_fit.reason})"
                  if not adapted_fit.trusted else batch_norm_kept(fit, adapted_fit, released_reference))
        if undone is None:
            fit, network, batch_norm["applied"] = adapted_fit, "adapted", True
        else:  # the step is undone: the released network with its own site operating point
            restore(predictor, before)
            batch_norm["why_not"] = undone
            batch_norm["estimated_prevalence_after_it"] = round(adapted_fit.prevalence, 4)
    threshold_without_it = predictor.threshold
    if fit.trusted:
        apply_site_fit(predictor, fit)
    record = {"source": predictor.reference, "source_revision": predictor.revision,
              "source_model_sha256": model_folder.model_file_sha256(predictor.folder)
              if predictor.model is not None else None,
              "image_count": int(len(scores)), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "batch_norm": batch_norm,
              "operating_point": {**fit.to_config(), "network": network,
                                  "threshold_without_it": float(threshold_without_it)}}
    predictor.config = {**predictor.config, "site_adaptation": record}
    return record


def refuse_adapted(predictor) -> None:
    """A folder adapted to one site is not adapted again: its scores already pass through that site's map, and
    validation's class shapes describe its source. Adapt the source instead."""
    site = predictor.config.get("site_adaptation")
    if site:
        raise AdaptationError(f"{predictor.name}: already adapted to {site.get('images')}; adapt its source "
                              f"({site.get('source')}) instead")


def state_of(predictor) -> tuple:
    """What adapting changes in a predictor, to put back with `restore`."""
    statistics = batch_norm_statistics(predictor.model) if predictor.model is not None else None
    return statistics, predictor.calibration, predictor.threshold, predictor.feature_reference, predictor.config


def restore(predictor, state: tuple) -> None:
    if state[0] is not None:
        set_statistics(predictor.model, state[0])
    predictor.calibration, predictor.threshold, predictor.feature_reference, predictor.config = state[1:]


def adapt_to_folder(predictor, folder, least_images: int = MIN_IMAGES) -> dict:
    """`fit_to_site` with every readable image under `folder`."""
    paths, skipped = [file.path for file in discover(folder)], []

    def site_batches():
        skipped.clear()
        return usable_batches(predictor, paths, skipped)

    try:
        record = fit_to_site(predictor, site_batches, least_images)
    except AdaptationError as error:
        raise AdaptationError(f"{folder}: {error}") from None
    record.update(images=str(folder), skipped_files=len(skipped))  # the record the predictor's config holds
    return record


def summary(record: dict) -> str:
    """What adapting did, in one line."""
    point, batch_norm = record["operating_point"], record["batch_norm"]
    steps = ("batch-norm statistics re-estimated" if batch_norm["applied"]
             else f"batch-norm step not taken ({batch_norm['why_not']})")
    if point["verdict"] == "trusted":
        low, high = point["prevalence_interval"]
        decided = (f"site operating point: estimated prevalence {point['prevalence']:.2f} ({low:.2f}-{high:.2f}), "
                   f"threshold {point['threshold']:.3f} on the site's probability")
    else:
        decided = f"kept its own operating point: the site operating point was refused ({point['reason']})"
    return f"{record['image_count']} images; {steps}; {decided}"


def adapt_for_scoring(predictors, folder) -> dict[str, str]:
    """`batch_eval.py --adapt`: each model adapted to `folder`'s own images before it scores them (transductive:
    no label is read). Returns what happened to each model, by name, in one line; each predictor's config holds
    its `site_adaptation` record."""
    done = {}
    for predictor in predictors:
        shared = [member.name for member in getattr(predictor, "members", [])
                  if any(member is other for other in predictors)]
        if shared:  # its members' scores would already be adapted, unlike the shapes its fit compares them with
            done[predictor.name] = (f"not adapted (its members {', '.join(shared)} are adapted here; score the "
                                    "ensemble without them, or adapt it with pneumo adapt)")
            continue
        try:
            done[predictor.name] = summary(adapt_to_folder(predictor, folder))
        except AdaptationError as why:
            done[predictor.name] = f"not adapted ({str(why).removeprefix(f'{folder}: ')})"
    return done


def write_adapted_folder(predictor, out) -> None:
    """Write an adapted predictor as a model folder: its network (an ensemble: its members, where they are), its
    config (name = the folder's) and the model card."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {key: value for key, value in predictor.config.items() if key != "model_file"}
    if predictor.model is None:  # an ensemble: the same members, named from the new folder
        config["members"] = [{**member, "folder": os.path.relpath((Path(predictor.folder) / member["folder"]).resolve(),
                                                                   out.resolve())} for member in config["members"]]
        config["name"] = out.name
        model_folder.write_config(out, config)
        write_model_card(out)
        return
    model_folder.save_network(predictor.model, out)
    ood = config.get("out_of_distribution")
    if ood:  # the network's features are the source's (no batch-norm step), so its reference still holds
        shutil.copy2(Path(predictor.folder) / ood["file"], out / ood["file"])
    config["name"] = out.name
    model_folder.write_config(out, config)
    write_model_card(out)


def adapt(source: str, images, out) -> dict:
    """`pneumo adapt SOURCE --images FOLDER --out OUT`; returns the `site_adaptation` record."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DataFolderError(f"{out}: already exists and is not empty; choose a new --out folder")
    if not Path(images).is_dir():
        raise DataFolderError(f"{images}: no such folder")
    predictor = load_predictor(source)
    record = adapt_to_folder(predictor, images)
    write_adapted_folder(predictor, out)
    return record


def fit_source(folder, data_root) -> dict:
    """Add what the label-free steps compare with to a local model folder exported before they existed: the
    `adaptation` block, where the network has batch normalisation and the folder lacks it, and the
    `site_reference` block (pneumo.training.export's fits on the folder's validation split)."""
    predictor = load_predictor(str(folder))
    if predictor.model is None:
        return fit_ensemble_source(predictor, data_root)
    split_path = Path(folder) / model_folder.SPLIT_FILE
    if not split_path.exists():
        raise ModelLoadError(f"{folder}: no {model_folder.SPLIT_FILE}, so its validation split is unknown")
    split = pd.read_csv(split_path)
    validation = split[split.split == model_folder.VALIDATION_SPLIT]
    config = dict(predictor.config)
    scores = validation_pass(predictor.model, validation, data_root, predictor.height, predictor.preprocessing)
    if scores.adapted is not None and not config.get("adaptation"):
        released = (model_folder.read_metrics(folder, "validation") or {}).get("roc_auc")
        config["adaptation"] = fit_adaptation_reference(scores, validation, predictor.positive_index, released)
    config["site_reference"] = fit_site_reference(scores, validation, predictor.positive_index,
                                                  Calibration.from_config(config.get("calibration")),
                                                  config.get("adaptation"))
    model_folder.write_config(folder, config)
    write_model_card(folder)
    return config


def fit_ensemble_source(ensemble, data_root) -> dict:
    """`fit_source` for an ensemble folder: validation's class shapes through the ensemble (its members share one
    data split); the batch-norm step is its members' to take."""
    split = pd.read_csv(Path(ensemble.members[0].folder) / model_folder.SPLIT_FILE)
    validation = split[split.split == model_folder.VALIDATION_SPLIT]
    inputs = np.stack([ensemble.load_image(str(Path(data_root) / path)) for path in validation.path])
    positives = validation.label.to_numpy() == ensemble.positive_index
    scores = site_scores(ensemble, (inputs[start:start + 64] for start in range(0, len(inputs), 64)))
    config = {**ensemble.config, "site_reference": {"fitted_on": f"validation split ({len(inputs)} images)",
                                                    "released": SiteReference.from_scores(scores, positives).to_config()}}
    model_folder.write_config(ensemble.folder, config)
    write_model_card(ensemble.folder)
    return config


@command("pneumo adapt")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pneumo adapt", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a model folder or Hub reference OWNER/NAME[@REVISION]")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", help="the site's X-rays, any folder (searched recursively; labels are not used)")
    what.add_argument("--fit-source", metavar="TRAINING_DATA", nargs="?", const=dataset_root() or "",
                      help="instead: fit what adapting compares with (validation's class shapes, and the "
                           "calibration for adapted networks) on the folder's validation split (the training data's "
                           "root, as data_split.csv names it; default: $PNEUMO_DATA, else ../shared/data/chest_xray "
                           "where it exists)")
    parser.add_argument("--out", help="with --images: the new model folder to write")
    args = parser.parse_args(argv)
    if args.images and not args.out:
        parser.error("--images needs --out")
    if args.fit_source == "":
        parser.error(f"--fit-source needs the training data's root (or set {DATA_VARIABLE})")
    if args.fit_source:
        config = fit_source(args.model, args.fit_source)
        print(json.dumps({key: config[key] for key in ("adaptation", "site_reference") if config.get(key)}, indent=2))
        return 0
    record = adapt(args.model, args.images, args.out)
    print(f"{args.out}: {summary(record)}")
    point = {key: value for key, value in record["operating_point"].items() if key not in ("probability_map", "checks")}
    print(json.dumps({"out": args.out, **record, "operating_point": point}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
