"""Record each bundled model's P(PNEUMONIA) on the example X-rays (run after retraining a bundled model)."""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pneumo.predictor import Predictor  # noqa: E402

expected = {}
for folder in (REPO / "models" / "cnn-lstm", REPO / "models" / "resnet50"):
    predictor = Predictor.from_folder(folder)
    expected[predictor.name] = {image.name: predictor.predict_file(image).positive_probability
                                for image in sorted((REPO / "examples").glob("*.jpeg"))}
(Path(__file__).parent / "expected_predictions.json").write_text(json.dumps(expected, indent=2) + "\n")
print(json.dumps(expected, indent=2))
