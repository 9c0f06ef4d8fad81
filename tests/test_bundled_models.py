"""The bundled models load from their folders and give sensible, format-independent predictions."""

import json
from pathlib import Path, PurePath

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import BUNDLED_MODELS, EXAMPLES, assert_close, example_images, true_label
from pneumo.hub import model_folder


@pytest.fixture(scope="module", params=BUNDLED_MODELS, ids=lambda p: p.name)
def predictor(request, bundled_predictors):
    return bundled_predictors[request.param.name]


def test_each_bundled_folder_is_complete(predictor):
    names = {path.name for path in predictor.folder.iterdir()}
    assert {"README.md", "metrics_validation.json", "metrics_test.json", "test_scorings.csv"} <= names
    network = model_folder.network_files(predictor.folder)
    assert all(path.exists() and path.stat().st_size < 100 * 10**6 for path in network)  # git hosts' file limit


EXPECTED = Path(__file__).parent / "data" / "expected_predictions.json"


@pytest.mark.parametrize("image", [p for p in example_images() if true_label(p) == "PNEUMONIA"], ids=lambda p: p.name)
def test_bundled_models_detect_pneumonia_on_the_example_images(predictor, image):
    prediction = predictor.predict_file(image)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
    assert prediction.label == "PNEUMONIA"


def test_example_probabilities_match_the_recorded_ones(predictor):
    """A regression check of the whole path (decode, preprocess, weights, calibration) on every example.

    The normal examples sit between 0.3 and 0.85, below both thresholds but far from 0: the official test
    set's normal images differ from the training ones (see model_card.md). After retraining, regenerate the
    file with: python tests/data/record_expected_predictions.py
    """
    expected = json.loads(EXPECTED.read_text())[predictor.name]
    for image in example_images():
        assert predictor.predict_file(image).positive_probability == pytest.approx(expected[image.name], abs=1e-4)


def test_rgb_jpeg_gray_png_and_16_bit_png_agree_within_0_02(predictor, tmp_path):
    for source in example_images():
        gray = np.asarray(Image.open(source).convert("L"))
        variants = {"rgb.jpg": lambda p: Image.fromarray(np.stack([gray] * 3, -1)).save(p, quality=95),
                    "gray8.png": lambda p: Image.fromarray(gray).save(p),
                    "gray16.png": lambda p: Image.fromarray(gray.astype(np.uint16) * 257).save(p)}
        probabilities = []
        for name, write in variants.items():
            write(tmp_path / name)
            probabilities.append(predictor.predict_file(tmp_path / name).positive_probability)
        assert max(probabilities) - min(probabilities) <= 0.02, (source.name, probabilities)


def test_batch_scoring_and_predict_file_give_the_same_probability(predictor):
    from pneumo.batch.scoring import discover, score

    predictions, _ = score(predictor, discover(EXAMPLES), batch_size=3)
    single = [predictor.predict_file(EXAMPLES / name).positive_probability for name in predictions.file]
    np.testing.assert_allclose(predictions.probability_pneumonia, single, rtol=0, atol=1e-6)


def test_recorded_test_metrics_come_from_the_official_test_set(predictor):
    metrics = json.loads((predictor.folder / "metrics_test.json").read_text())
    assert metrics["n_images"] == 624
    assert sum(map(sum, metrics["confusion_matrix"])) == 624
    assert metrics["threshold"] == predictor.threshold


def reference_grad_cam(model, feature_layer, image, class_index):
    """Grad-CAM written out step by step, eagerly: the check on the library's one-pass version. The score of a
    class of a two-class model is its log-odds: its logit less the other's."""
    import keras
    import tensorflow as tf

    both = keras.Model(model.input, [model.get_layer(feature_layer).output, model.get_layer("logits").output])
    with tf.GradientTape() as tape:
        feature_map, logits = both(image[None], training=False)
        score = logits[0, class_index] - (logits[0, 1 - class_index] if logits.shape[-1] == 2 else 0.0)
    gradients = tape.gradient(score, feature_map)[0].numpy()
    cam = np.maximum((feature_map[0].numpy() * gradients.mean(axis=(0, 1))).sum(axis=-1), 0)
    return cam / cam.max() if cam.max() > 0 else cam


def test_grad_cam_matches_the_textbook_computation_for_each_class(predictor):
    if predictor.explanation["method"] != "gradcam":
        pytest.skip("not a Grad-CAM model (tests/test_explanation.py checks integrated gradients)")
    image = predictor.load_image(example_images()[-1])
    heatmaps = {}
    for index, name in enumerate(predictor.class_names):
        heatmaps[name] = predictor.explain(image, name)
        expected = reference_grad_cam(predictor.model, predictor.explanation["layer"], image, index)
        np.testing.assert_allclose(heatmaps[name], expected, atol=2e-3)
    assert heatmaps["PNEUMONIA"].max() == pytest.approx(1.0)
    assert not np.allclose(heatmaps["PNEUMONIA"], heatmaps["NORMAL"], atol=0.05)


def test_one_pass_gives_the_same_prediction_as_predict_image(predictor):
    for path in example_images():
        image = predictor.load_image(path)
        prediction, _ = predictor.predict_and_explain(image)
        alone = predictor.predict_image(image)
        assert prediction.label == alone.label
        assert prediction.positive_probability == pytest.approx(alone.positive_probability, abs=1e-5)


TEST_SET = EXAMPLES.parents[1] / "shared" / "data" / "chest_xray" / "test"
# Each bundled model's P(PNEUMONIA) of every file of the official test set, as batch scoring gives it: what its
# metrics_test.json was computed from. After retraining: python tests/data/record_test_probabilities.py
RECORDED_PROBABILITIES = Path(__file__).parent / "data" / "test_set_probabilities"
# What metrics_test.json says of the model rather than of its scores: where it was loaded from, and the data.
IDENTITY_KEYS = {"model", "display_name", "reference", "revision", "split",
                 # what a scoring since the out-of-distribution check also records: the files it flagged and the
                 # decisions of the rest, which the probabilities alone do not say
                 "decisions", "out_of_distribution", "out_of_distribution_files"}


def recorded_probabilities(folder) -> pd.DataFrame:
    return pd.read_csv(RECORDED_PROBABILITIES / f"{Path(folder).name}.csv", dtype={"file": str})


def recorded_test_metrics(folder) -> dict:
    recorded = json.loads((Path(folder) / "metrics_test.json").read_text())
    return {key: value for key, value in recorded.items() if key not in IDENTITY_KEYS}


def needs_the_test_set():
    if not TEST_SET.exists():
        pytest.skip("the shared dataset is not beside this checkout")


@pytest.mark.parametrize("folder", BUNDLED_MODELS, ids=lambda p: p.name)
def test_the_recorded_test_metrics_follow_from_the_recorded_probabilities(folder):
    """metrics_test.json recomputed with the library's own metrics (as pneumo.training.evaluate computes them) from each
    file's recorded, calibrated P(PNEUMONIA) at the folder's threshold: counts exactly, every other number to
    1e-6 (the same numbers, read back from text). The bootstrap intervals are left to the slow test below."""
    from pneumo.batch.reports import model_metrics, probability_column
    from pneumo.training.data import label_from_folders

    config = model_folder.read_config(folder)
    model = {"class_names": config["class_names"], "positive_class": config["positive_class"]}
    probabilities = recorded_probabilities(folder)
    assert list(probabilities.columns) == ["file", probability_column(model["positive_class"])]
    predictions = probabilities.assign(
        true_label=[label_from_folders(PurePath(name), model["class_names"]) for name in probabilities.file],
        threshold=config["threshold"])
    computed = model_metrics(predictions, 0, model, detailed=True, intervals=False)
    recorded = recorded_test_metrics(folder)
    assert "confidence_intervals_95" in recorded
    del recorded["confidence_intervals_95"]
    assert_close(computed, recorded, f"{folder.name}/metrics_test.json", tolerance=1e-6)


def test_a_sample_of_the_test_set_scores_as_recorded(predictor):
    """Every 39th file of the official test set (16 files, both classes), scored now, gets the recorded P(PNEUMONIA)
    within 1e-4 (TensorFlow's CPU kernels differ between machines in the last digits); the recording covers
    every file of the test set."""
    from pneumo.batch.scoring import discover, score

    needs_the_test_set()
    files = discover(TEST_SET)
    recorded = recorded_probabilities(predictor.folder).set_index("file").probability_pneumonia
    assert [file.relative.as_posix() for file in files] == list(recorded.index)
    sample = files[::39]
    predictions, skipped = score(predictor, sample)
    assert len(predictions) == 16 and skipped.empty and set(predictions.true_label) == {"NORMAL", "PNEUMONIA"}
    np.testing.assert_allclose(predictions.probability_pneumonia, recorded[predictions.file], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_batch_scoring_of_the_test_set_reproduces_the_recorded_test_metrics(predictor, tmp_path):
    """The whole official test set scored again, as pneumo.training.evaluate scored it (minutes, so opt-in:
    `python -m pytest -m slow`; the recorded probabilities and a scored sample cover it in every run). Counts exactly: a probability that crossed the threshold is a real change. Every other number within
    1e-4: oneDNN picks kernels by CPU, so another machine gives other last digits."""
    from pneumo.batch.scoring import run_folder

    needs_the_test_set()
    scored = run_folder(TEST_SET, tmp_path, [predictor], show_progress=False, figures=False)[predictor.name]
    recorded = recorded_test_metrics(predictor.folder)
    assert_close({key: scored.get(key) for key in recorded}, recorded, f"{predictor.name}/metrics_test.json",
                 tolerance=1e-4)
