"""Which score Grad-CAM should explain for a two-class model (issue 33), chosen on training images, not the test set.

The ResNet50's Grad-CAM map of a class's own logit was empty (no positive value anywhere) on many normal X-rays.
For two classes the probability depends only on the difference of the two logits, so the candidate is the map of
that difference (the class's log-odds). For each of the first N images of each class of train/, this counts how
often the decided class's map is empty under each choice, from one pass of the model (its feature map and the
gradients of both logits, as pneumo.explain.gradcam computes them).

    python docs/experiments/gradcam_log_odds.py [--model models/resnet50] [--per-class 150]

Measured once (issue 33), the ResNet50 on 150 + 150 training X-rays: own logit empty on 95, log-odds on 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pneumo.hub.loading import load_predictor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "resnet50"))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "chest_xray" / "train")
    parser.add_argument("--per-class", type=int, default=150)
    args = parser.parse_args()
    predictor = load_predictor(args.model)
    explainer = predictor._explainer_for()  # the traced pass: feature map, logits, each logit's gradients
    files = [path for label in ("NORMAL", "PNEUMONIA")
             for path in sorted((args.data / label).iterdir())[:args.per_class]]
    empty = {"own logit": 0, "log-odds": 0}
    for path in files:
        image = predictor.load_image(path)
        feature_map, _, gradients, _ = explainer._compute(np.asarray(image[None], np.float32))
        feature_map, gradients = np.asarray(feature_map[0], np.float64), np.asarray(gradients[:, 0], np.float64)
        weights = gradients.mean(axis=(1, 2))  # (classes, channels)
        decided = predictor.class_names.index(predictor.predict_image(image).label)
        for name, channel_weights in (("own logit", weights[decided]),
                                      ("log-odds", weights[decided] - weights[1 - decided])):
            empty[name] += int(np.einsum("hwc,c->hw", feature_map, channel_weights).max() <= 0)
    print(f"{Path(args.model).name}, {len(files)} training X-rays: decided class's map empty with "
          + ", ".join(f"{name} {count}" for name, count in empty.items()))


if __name__ == "__main__":
    main()
