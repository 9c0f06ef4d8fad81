"""A predictor shared by the demo's concurrent requests builds its explainer (a traced Grad-CAM or integrated
gradients graph, seconds of work) once, however many first requests arrive together."""

import threading
import time

import keras
import numpy as np

import pneumo.predictor
from conftest import png_bytes, synthetic_xray
from pneumo.models import get_architecture
from pneumo.predictor import Predictor

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
    build = pneumo.predictor.explainer

    def slow_explainer(*args):
        # Long enough that, without the lock, every thread would find no explainer yet and build its own.
        built.append(threading.get_ident())
        time.sleep(0.5)
        return build(*args)

    monkeypatch.setattr(pneumo.predictor, "explainer", slow_explainer)
    start = threading.Barrier(THREADS)
    results = [None] * THREADS

    def first_request(index):
        start.wait()
        results[index] = predictor.explained_assessment(image)

    threads = [threading.Thread(target=first_request, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(built) == 1
    assert all(result is not None for result in results)
    probabilities, _, heatmaps = results[0]
    for other_probabilities, _, other_heatmaps in results[1:]:
        np.testing.assert_array_equal(other_probabilities, probabilities)
        np.testing.assert_array_equal(other_heatmaps, heatmaps)
