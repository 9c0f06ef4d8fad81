"""A predictor shared by the demo's concurrent requests builds its explainer (a traced Grad-CAM or integrated
gradients graph, seconds of work) once, however many first requests arrive together."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np

import pneumo.prediction.predictor
from conftest import REPO, png_bytes, run_at_once, synthetic_xray
from pneumo.networks import get_architecture
from pneumo.prediction.predictor import Predictor

SIDE = 32
THREADS = 8


def tiny_predictor(folder) -> Predictor:
    """An untrained CNN+LSTM of two small blocks, with the configuration a model folder would give it."""
    keras.utils.set_random_seed(0)
    network = get_architecture("cnn_lstm").build((SIDE, SIDE, 3), 2, filters=(4, 8), lstm_units=4)
    config = {"input": {"height": SIDE, "width": SIDE}, "class_names": ["NORMAL", "PNEUMONIA"],
              "positive_class": "PNEUMONIA", "threshold": 0.5,
              "explanation": {"method": "gradcam", "layer": "last_conv_features"}}
    return Predictor(network, config, folder, "tiny")


def test_concurrent_first_explanations_build_one_explainer_and_agree(tmp_path, monkeypatch):
    predictor = tiny_predictor(tmp_path)
    image = predictor.load_image(png_bytes(synthetic_xray(size=64)))
    built = []
    build = pneumo.prediction.predictor.explainer

    def slow_explainer(*args):
        # Long enough that, without the lock, every thread would find no explainer yet and build its own.
        built.append(threading.get_ident())
        time.sleep(0.5)
        return build(*args)

    monkeypatch.setattr(pneumo.prediction.predictor, "explainer", slow_explainer)
    results = run_at_once(lambda: predictor.explained_assessment(image), THREADS)
    assert len(built) == 1
    probabilities, _, heatmaps = results[0]
    for other_probabilities, _, other_heatmaps in results[1:]:
        np.testing.assert_array_equal(other_probabilities, probabilities)
        np.testing.assert_array_equal(other_heatmaps, heatmaps)


def test_many_models_each_trace_their_passes_once_and_tensorflow_sees_no_retracing(tiny_model_folder):
    """The soak test's log had TensorFlow's "triggered tf.function retracing" warning: it counts traces by the
    Python code, so the fifth model loaded looked like one function retraced five times (TensorFlow warns at five)."""
    script = (
        "import sys\n"
        "import numpy as np\n"
        "from conftest import run_at_once\n"
        "from pneumo.prediction.predictor import Predictor\n"
        "predictors = [Predictor.from_folder(sys.argv[1]) for _ in range(5)]\n"
        "for predictor in predictors:\n"
        "    image = np.random.default_rng(0).random(predictor.input_shape, dtype=np.float32)\n"
        "    predictor.assess(image[None])\n"
        "    run_at_once(lambda: predictor.explained_assessment(image), 3)\n"
        "print('done')\n")
    finished = subprocess.run([sys.executable, "-c", script, str(tiny_model_folder)],
                              cwd=Path(__file__).parent, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert finished.returncode == 0 and "done" in finished.stdout, finished.stderr[-3000:]
    assert "retracing" not in finished.stderr, finished.stderr[-3000:]
