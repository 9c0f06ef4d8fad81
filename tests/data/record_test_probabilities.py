"""Record each bundled model's P(PNEUMONIA) of every file of the official test set, as batch scoring gives it
(run after retraining a bundled model, when its metrics_test.json is recorded; a few minutes on 2 cores).

    python tests/data/record_test_probabilities.py [--data ../shared/data/chest_xray/test] [FOLDER_NAME ...]

writes tests/data/test_set_probabilities/<model folder>.csv: file (relative to the test folder) and
probability_pneumonia (calibrated), one row per file. tests/test_bundled_models.py recomputes each model's
metrics_test.json from them and checks a sample of the test set against them. FOLDER_NAME (e.g. cnn-lstm)
records only those models.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices stay out of the console
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pneumo.batch.scoring import discover, score  # noqa: E402
from pneumo.batch.reports import probability_column  # noqa: E402
from pneumo.hub.bundled import BUNDLED_MODELS  # noqa: E402
from pneumo.prediction.predictor import Predictor  # noqa: E402

RECORDS = Path(__file__).parent / "test_set_probabilities"

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "chest_xray" / "test",
                    help="the official test folder (NORMAL/ and PNEUMONIA/)")
parser.add_argument("models", nargs="*", metavar="FOLDER_NAME", help="only these bundled models (default: all)")
args = parser.parse_args()
folders = [folder for _, folder in BUNDLED_MODELS.values() if not args.models or folder.name in args.models]
files = discover(args.data)
for folder in folders:
    predictor = Predictor.from_folder(folder)
    predictions, skipped = score(predictor, files)
    if len(skipped):
        sys.exit(f"{args.data}: {len(skipped)} files could not be read ({', '.join(skipped.file[:3])}, ...)")
    RECORDS.mkdir(exist_ok=True)
    column = probability_column(predictor.positive_class)
    predictions[["file", column]].to_csv(RECORDS / f"{folder.name}.csv", index=False)
    print(f"{folder.name}: {len(predictions)} files -> {RECORDS / f'{folder.name}.csv'}")
