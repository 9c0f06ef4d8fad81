"""How far each bundled model's P(PNEUMONIA) moves when an X-ray arrives as a 2048 px bicubic upscale (JPEG,
quality 95), and how far the reduced JPEG decode lands from a full decode of that upscale: the two numbers
tests/test_encodings.py holds as strict xfails, for any X-ray (its docstring quotes the current and the previous
near-threshold X-ray).

    PYTHONPATH=. python docs/experiments/resampling_moves.py tests/data/near_threshold_xray.jpeg [MORE.jpeg ...]
    git show 8635dff:tests/data/near_threshold_xray.jpeg > /tmp/previous.jpeg   # the previous X-ray
    git show e7c4c85:tests/data/near_threshold_xray.jpeg > /tmp/before.jpeg     # the one before it
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.hub.bundled import BUNDLED_MODELS
from pneumo.imaging.decoding import read_grayscale
from pneumo.prediction.predictor import Predictor

predictors = {name: Predictor.from_folder(folder) for name, (_, folder) in BUNDLED_MODELS.items()}
for source in sys.argv[1:]:
    gray = np.asarray(Image.open(source).convert("L"))
    work = Path(tempfile.mkdtemp())
    Image.fromarray(gray).save(work / "gray.png")
    Image.fromarray(gray).resize((2048, 2048), Image.BICUBIC).save(work / "upscaled.jpg", quality=95)
    for name, predictor in predictors.items():
        original = predictor.predict_file(work / "gray.png").positive_probability
        upscaled = predictor.predict_file(work / "upscaled.jpg").positive_probability
        full_input = predictor.preprocessing.model_input(read_grayscale(work / "upscaled.jpg"), predictor.height,
                                                         predictor.width)
        full = predictor.predict_image(full_input).positive_probability
        print(f"{Path(source).name} {name}: P={original:.3f}, upscale moves {abs(upscaled - original):.3f}, "
              f"reduced vs full decode {abs(upscaled - full):.3f}", flush=True)
