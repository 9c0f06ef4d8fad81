"""A model folder read now and its network loaded when first needed: the demo builds and serves its page from what
each folder's pneumo.json says while the networks load behind it (pneumo.demo.network_loader)."""

import json
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import BUNDLED_BY_NAME, example_images, run_at_once
from pneumo import ModelLoadError
from pneumo.hub import model_folder
from pneumo.demo.network_loader import load_networks, networks_loading
from pneumo.prediction.predictor import Predictor

THREADS = 8
RECORDED = Path(__file__).parent / "data" / "expected_predictions.json"


@pytest.fixture
def counted_loads(monkeypatch):
    """The networks loaded from their folders during the test, one entry per load."""
    loads, load = [], model_folder.load_network
    monkeypatch.setattr(model_folder, "load_network", lambda *args: loads.append(args[0]) or load(*args))
    return loads


def test_a_deferred_folder_says_what_its_pneumo_json_says_before_its_network_loads(tiny_model_folder, counted_loads):
    deferred = Predictor.from_folder(tiny_model_folder, defer_network=True)
    config = model_folder.read_config(tiny_model_folder)
    assert (deferred.class_names, deferred.threshold, deferred.explanation_method) == \
        (config["class_names"], config["threshold"], "Grad-CAM")
    assert deferred.input_shape == (64, 64, 3) and not counted_loads
    image = deferred.load_image(example_images()[0])
    probabilities, _, heatmaps = deferred.explained_assessment(image)
    assert counted_loads == [tiny_model_folder]
    eager = Predictor.from_folder(tiny_model_folder)
    expected = eager.explained_assessment(image)
    np.testing.assert_allclose(probabilities, expected[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(heatmaps, expected[2], rtol=0, atol=1e-6)


def test_concurrent_first_requests_load_a_deferred_network_once(tiny_model_folder, counted_loads):
    deferred = Predictor.from_folder(tiny_model_folder, defer_network=True)
    image = deferred.load_image(example_images()[1])
    results = run_at_once(lambda: deferred.assess(image[None])[0], THREADS)
    assert len(counted_loads) == 1
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


def test_a_network_that_fails_to_load_is_reported_to_every_request_and_logged(tiny_model_folder, tmp_path, caplog):
    damaged = shutil.copytree(tiny_model_folder, tmp_path / "damaged")
    (damaged / "model.weights.h5").write_bytes(b"not an HDF5 file")
    deferred = Predictor.from_folder(damaged, defer_network=True)  # the files are there: read at first use
    load_networks([deferred])
    assert any("cannot be loaded" in record.getMessage() and record.levelno == logging.ERROR
               for record in caplog.records)
    for _ in range(2):
        with pytest.raises(ModelLoadError, match="cannot be loaded"):
            deferred.explained_assessment(np.zeros(deferred.input_shape, np.float32))


def test_a_folder_without_its_network_is_refused_at_once_even_deferred(tiny_model_folder, tmp_path):
    missing = shutil.copytree(tiny_model_folder, tmp_path / "missing")
    (missing / "model.weights.h5").unlink()
    with pytest.raises(ModelLoadError, match="model.weights.h5 is missing"):
        Predictor.from_folder(missing, defer_network=True)


class Recorded:
    """A stand-in predictor that records what the loader asks of it."""

    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def load_network(self):
        self.calls.append(f"load {self.name}")

    def trace(self):
        self.calls.append(f"trace {self.name}")


def test_the_loader_starts_once_told_loads_the_traced_pair_first_and_finishes_before_the_block_ends():
    calls, serving = [], threading.Event()
    predictors = [Recorded(name, calls) for name in ("A", "B", "C", "D")]
    with networks_loading(predictors, traced=predictors[2:], start_when=serving.is_set) as loader:
        assert not serving.wait(0.3) and not calls  # the page is not served yet: nothing loads
        serving.set()
        loader.join(timeout=10)
    assert calls == ["load C", "trace C", "load D", "trace D", "load A", "load B"]


def test_leaving_the_block_before_the_page_serves_loads_nothing():
    calls = []
    with networks_loading([Recorded("A", calls)], start_when=lambda: False) as loader:
        pass
    assert not loader.is_alive() and not calls


@pytest.mark.parametrize("name", ["CNN+LSTM", "ResNet50"])
def test_the_default_pair_deferred_gives_the_recorded_probabilities_and_the_same_heatmaps(name, bundled_predictors):
    """The page's path (networks deferred) against the recorded examples (to 1e-4, as test_bundled_models checks
    the batch path) and against the same network loaded at once (heatmaps equal)."""
    folder = BUNDLED_BY_NAME[name][1]
    deferred, loaded = Predictor.from_folder(folder, defer_network=True), bundled_predictors[folder.name]
    recorded = json.loads(RECORDED.read_text())[deferred.name]
    for path in example_images():
        image = deferred.load_image(path)
        probabilities, _, heatmaps = deferred.explained_assessment(image)
        assert probabilities[deferred.positive_index] == pytest.approx(recorded[path.name], abs=1e-4), path.name
        np.testing.assert_allclose(heatmaps, loaded.explained_assessment(image)[2], rtol=0, atol=1e-5)


def test_the_page_says_which_models_are_still_loading_until_all_are_ready(tiny_model_folder):
    from pneumo.demo.handlers import loading_status

    deferred = Predictor.from_folder(tiny_model_folder, defer_network=True)
    eager = Predictor.from_folder(tiny_model_folder)
    text, again = loading_status({"Eager": eager, "Deferred": deferred})
    assert again and text.startswith("⏳ Loading the models (1 of 2 ready; still loading Deferred).")
    deferred.load_network()
    assert loading_status({"Eager": eager, "Deferred": deferred}) == ("", False)
