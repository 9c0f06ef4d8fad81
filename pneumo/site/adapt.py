"""Adapt a model to a new site without labels: its batch-norm statistics re-estimated on the site's X-rays.

    pneumo adapt models/resnet50 --images SITE_FOLDER --out models/resnet50-site
    pneumo adapt models/resnet50 --fit-source ../shared/data/chest_xray   # once per model folder

A model trained on one hospital's X-rays calls many of another's healthy children ill: the new machine and
processing shift what every layer reads (AdaBN, Li et al. 2016; pneumo.site.adabn). Any folder of the site's
images will do (searched recursively, labels ignored, unreadable files skipped). The new folder holds the
same network with the site's statistics, decides with the calibration and operating point its source fitted
for an adapted network (`adaptation` in pneumo.json: fitted on the validation split after the same
re-estimation on its clean images), and records the source model, its hash, the folder, the image count and
the date (`site_adaptation`). `--fit-source` adds that `adaptation` block to a folder exported before it
existed, from the training data and the folder's data_split.csv.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import pandas as pd

from ..hub import model_folder
from .adabn import METHOD, adapt_predictor, batch_norm_layers, why_not_adapted
from ..batch.scoring import discover
from ..cli import command
from ..training.data import readable_batches
from ..errors import AdaptationError, DataFolderError, ModelLoadError
from ..training.export import fit_adaptation_reference
from ..hub.loading import load_predictor
from ..hub.model_card import write_model_card
from ..prediction.predictor import Predictor

# A floor, not a recommendation. The statistics are those of the folder's case mix as much as of its machine:
# docs/experiments/adaptation.py adapted on 100 hold-out X-rays that were 60% normal, against 19% in the
# images scored, and specificity fell from about 0.96 to 0.15-0.39. A site's folder should hold its usual mix.
MIN_IMAGES = 100


def check_adaptable(predictor) -> None:
    """Refuse, with the reason, a model that cannot be adapted, before any image is read."""
    if predictor.model is None:
        raise AdaptationError(f"{predictor.name}: an ensemble; adapt its members, then combine them again")
    if not batch_norm_layers(predictor.model):
        raise AdaptationError(f"{predictor.name}: its network has no batch normalisation, so there are no "
                              "statistics to adapt; score it as it is")
    refused = why_not_adapted(predictor.config.get("adaptation") or {})
    if refused:
        raise AdaptationError(f"{predictor.name}: {refused}; score it as it is, or refit it with labels "
                              "(pneumo.site.refit)")


def usable_batches(predictor, paths: list[Path], skipped: list[str], batch_size: int = 32):
    """The model inputs of every readable file in `paths`, batch by batch; each unreadable file's reason is
    appended to `skipped`."""
    for images, _, unreadable in readable_batches(paths, predictor.load_image, predictor.input_shape, batch_size):
        skipped += unreadable
        if len(images):
            yield images


def adapt_to_folder(predictor, folder, least_images: int = MIN_IMAGES) -> dict:
    """Adapt `predictor` in place to every image under `folder`; returns the record of it (`site_adaptation`),
    which its config now holds too."""
    check_adaptable(predictor)
    files = discover(folder)
    skipped: list[str] = []
    try:
        count = adapt_predictor(predictor, usable_batches(predictor, [file.path for file in files], skipped),
                                least_images)
    except AdaptationError as error:
        raise AdaptationError(f"{folder}: {error}") from None
    record = {"method": METHOD, "source": predictor.reference, "source_revision": predictor.revision,
              "source_model_sha256": model_folder.model_file_sha256(predictor.folder),
              "images": str(folder), "image_count": count, "skipped_files": len(skipped),
              "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    predictor.config = {**predictor.config, "site_adaptation": record}
    return record


def adapt_for_scoring(predictors, folder) -> dict[str, str]:
    """`batch_eval.py --adapt`: each model adapted to `folder`'s own images before it scores them (transductive:
    no label is read). A model `check_adaptable` refuses scores as it is. Returns what happened to each model,
    by name; each adapted predictor's config holds its `site_adaptation` record."""
    done = {}
    for predictor in predictors:
        try:
            check_adaptable(predictor)
        except AdaptationError as why:
            done[predictor.name] = f"not adapted ({str(why).removeprefix(predictor.name + ': ')})"
            continue
        record = adapt_to_folder(predictor, folder)
        done[predictor.name] = (f"adapted to this folder's {record['image_count']} readable images (batch-norm "
                                "statistics; labels unused)")
    return done


def write_adapted_folder(predictor, out) -> None:
    """Write an adapted predictor as a model folder: its network, its config (name = the folder's) and the model
    card."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_folder.save_network(predictor.model, out)
    config = {key: value for key, value in predictor.config.items() if key != "model_file"}
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
    """Add the `adaptation` block (pneumo.training.export.fit_adaptation_reference) to a local model folder."""
    predictor = Predictor.from_folder(folder)
    check_adaptable(predictor)
    split_path = Path(folder) / model_folder.SPLIT_FILE
    if not split_path.exists():
        raise ModelLoadError(f"{folder}: no {model_folder.SPLIT_FILE}, so its validation split is unknown")
    split = pd.read_csv(split_path)
    released = (model_folder.read_metrics(folder, "validation") or {}).get("roc_auc")
    block = fit_adaptation_reference(predictor.model, split[split.split == model_folder.VALIDATION_SPLIT],
                                     data_root, predictor.height, predictor.preprocessing, predictor.positive_index,
                                     released)
    model_folder.write_config(folder, {**predictor.config, "adaptation": block})
    write_model_card(folder)
    return block


@command("pneumo adapt")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pneumo adapt", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a model folder or Hub reference OWNER/NAME[@REVISION]")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", help="the site's X-rays, any folder (searched recursively; labels are not used)")
    what.add_argument("--fit-source", metavar="TRAINING_DATA",
                      help="instead: fit the folder's calibration for adapted networks on its validation split "
                           "(the training data's root, as data_split.csv names it)")
    parser.add_argument("--out", help="with --images: the new model folder to write")
    args = parser.parse_args(argv)
    if args.images and not args.out:
        parser.error("--images needs --out")
    if args.fit_source:
        block = fit_source(args.model, args.fit_source)
        print(json.dumps({key: block[key] for key in ("threshold", "calibration", "validation")}, indent=2))
        return 0
    record = adapt(args.model, args.images, args.out)
    print(json.dumps({"out": args.out, **record}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
