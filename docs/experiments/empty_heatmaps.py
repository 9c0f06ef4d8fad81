"""How often each bundled model's heatmap of its decided class is empty (issue 33): no positive value anywhere, so
scaling it to its peak leaves a flat map that the demo once drew as if it were one.

For every image of the official test set, each bundled model's explained pass (the demo's: Grad-CAM or integrated
gradients, `Predictor.predict_and_explain`) gives its decision and the heatmap of the decided class. Nothing is
chosen from these numbers: they say how often the demo has no heatmap to show. The scoring is logged in each model
folder's test_scorings.csv, as every scoring of the test set is.

    python docs/experiments/empty_heatmaps.py --heatmaps "WHAT THE HEATMAPS ARE" [--data DIR] [--limit N]

Adds to docs/experiments/empty_heatmaps.csv, under `heatmaps`: per model and true class, images and empty maps.
Measured twice for issue 33: Grad-CAM of each class's own score (before), then of its log-odds (after).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pneumo.batch.scoring import discover  # noqa: E402
from pneumo.hub import model_folder  # noqa: E402
from pneumo.hub.bundled import BUNDLED_MODELS  # noqa: E402
from pneumo.hub.loading import load_predictor  # noqa: E402
from pneumo.metrics import compute_metrics  # noqa: E402

OUT = REPO / "docs" / "experiments" / "empty_heatmaps.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "chest_xray" / "test")
    parser.add_argument("--limit", type=int, help="only the first N images of each class (a quick look; not logged)")
    parser.add_argument("--heatmaps", required=True,
                        help="what the heatmaps are, for the table (e.g. the code's state)")
    args = parser.parse_args()
    files = [f for f in discover(args.data) if f.true_label(("NORMAL", "PNEUMONIA"))]
    if args.limit:
        files = [f for label in ("NORMAL", "PNEUMONIA")
                 for f in [f for f in files if f.true_label(("NORMAL", "PNEUMONIA")) == label][:args.limit]]
    rows = []
    for name, (_, folder) in BUNDLED_MODELS.items():
        predictor = load_predictor(str(folder))
        started, records = time.perf_counter(), []
        for file in files:
            prediction, heatmap = predictor.predict_and_explain(predictor.load_image(file.path))
            records.append((file.true_label(predictor.class_names), prediction.label,
                            prediction.positive_probability, not float(heatmap.max()) > 0))
        table = pd.DataFrame(records, columns=["true", "decided", "probability", "empty_map"])
        for true_label, group in [("all", table), *table.groupby("true")]:
            rows.append({"heatmaps": args.heatmaps, "model": name, "method": predictor.explanation_method,
                         "true_label": true_label,
                         "images": len(group), "empty_maps": int(group.empty_map.sum()),
                         "empty_share": round(float(group.empty_map.mean()), 4)})
        print(f"{name:<16} {predictor.explanation_method:<22} empty {int(table.empty_map.sum())}/{len(table)} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        if not args.limit:
            truth = (table.true == predictor.positive_class).to_numpy(int)
            metrics = compute_metrics(truth, table.probability.to_numpy(), predictor.threshold)
            model_folder.log_test_scoring(folder, {**metrics, "n_images": len(table), "threshold": predictor.threshold},
                                          f"{args.data} (empty-heatmap check, issue 33)")
    if not args.limit:
        earlier = pd.read_csv(OUT) if OUT.exists() else pd.DataFrame()
        pd.concat([earlier, pd.DataFrame(rows)], ignore_index=True).to_csv(OUT, index=False)
        print(f"added to {OUT.relative_to(REPO)}")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
