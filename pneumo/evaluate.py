"""Score a model folder on a labeled image folder and record the metrics in the folder.

    python -m pneumo.evaluate models/cnn-lstm --data ../shared/data/chest_xray/test --split test

writes models/cnn-lstm/metrics_test.json and refreshes the model card. Run it on the official test set
once, after every choice was made on the validation split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .batch import discover, model_record, score
from .modelcard import write_model_card
from .predictor import Predictor
from .reports import model_metrics


def evaluate_folder(predictor: Predictor, folder) -> dict:
    """The metrics batch_eval.py reports for this model on `folder`: the same scoring code, so the same numbers."""
    predictions, skipped = score(predictor, discover(folder))
    return model_metrics(predictions, len(skipped), model_record(predictor))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pneumo.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="model folder")
    parser.add_argument("--data", required=True, help="folder with NORMAL/ and PNEUMONIA/ subfolders")
    parser.add_argument("--split", default="test", help="name recorded in metrics_<split>.json")
    args = parser.parse_args(argv)
    folder = Path(args.model)
    metrics = evaluate_folder(Predictor.from_folder(folder), args.data)
    metrics["split"] = f"{args.split}: {args.data}"
    (folder / f"metrics_{args.split}.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_model_card(folder)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
