"""Score a model folder on a labeled image folder and record the metrics in the folder.

    pneumo evaluate models/cnn-lstm --data ../shared/data/chest_xray/test --split test

writes models/cnn-lstm/metrics_test.json (with 95% bootstrap intervals and subgroups), appends the
scoring to models/cnn-lstm/test_scorings.csv and refreshes the model card. Run it on the official test
set once, after every choice was made on the validation split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..hub import model_folder
from ..batch.scoring import discover, model_record, score
from ..batch.reports import model_metrics
from ..cli import command
from ..hub.loading import load_predictor
from ..hub.model_card import write_model_card
from ..prediction.predictor import Predictor


def evaluate_folder(predictor: Predictor, folder) -> dict:
    """The metrics batch_eval.py reports for this model on `folder` (the same scoring code, so the same
    numbers), with intervals and subgroups."""
    predictions, skipped = score(predictor, discover(folder))
    return model_metrics(predictions, len(skipped), model_record(predictor), detailed=True)


@command("pneumo evaluate")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pneumo evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="model folder (or ensemble folder)")
    parser.add_argument("--data", required=True, help="folder with NORMAL/ and PNEUMONIA/ subfolders")
    parser.add_argument("--split", default="test", help="name recorded in metrics_<split>.json")
    args = parser.parse_args(argv)
    folder = Path(args.model)
    metrics = evaluate_folder(load_predictor(folder), args.data)
    metrics["split"] = f"{args.split}: {args.data}"
    model_folder.write_metrics(folder, args.split, metrics)
    if args.split == "test":
        model_folder.log_test_scoring(folder, metrics, str(args.data))
    write_model_card(folder)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
