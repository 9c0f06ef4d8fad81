"""Record each bundled model's P(PNEUMONIA) on the example X-rays (run after retraining or adding a bundled model).

    python tests/data/record_expected_predictions.py [--all]

Models already recorded keep their values (recorded at their release) unless --all.
"""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pneumo.hub import model_folder  # noqa: E402
from pneumo.hub.bundled import BUNDLED_MODELS  # noqa: E402
from pneumo.prediction.predictor import Predictor  # noqa: E402

RECORD = Path(__file__).parent / "expected_predictions.json"
expected = {} if "--all" in sys.argv or not RECORD.exists() else json.loads(RECORD.read_text())
for _, folder in BUNDLED_MODELS.values():
    if model_folder.read_config(folder).get("name", folder.name) in expected:  # Predictor.name, without loading
        continue
    predictor = Predictor.from_folder(folder)
    expected[predictor.name] = {image.name: predictor.predict_file(image).positive_probability
                                for image in sorted((REPO / "examples").glob("*.jpeg"))}
RECORD.write_text(json.dumps(expected, indent=2) + "\n")
print(json.dumps(expected, indent=2))
