"""Heatmaps of a model with no convolutional map: integrated gradients, named by the model folder, drawn
through the same interface as Grad-CAM; and the grid average that pools any layer's output."""

import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import BUNDLED_MODELS, TINY_ROW_LSTM_SIDE as SIDE, png_bytes, synthetic_xray
from pneumo.hub import model_folder
from pneumo.errors import ModelLoadError
from pneumo.explain.overlays import overlay_backdrop, overlay_heatmap
from pneumo.explain.integrated_gradients import IntegratedGradients
from pneumo.networks import get_architecture, logits_model
from pneumo.explain.maps import grid_average
from pneumo.prediction.predictor import Predictor


@pytest.fixture(scope="module")
def row_lstm_predictor(row_lstm_folder):
    return Predictor.from_folder(row_lstm_folder)


@pytest.fixture(scope="module")
def smooth_row_lstm():
    """A small row LSTM with no ReLU between its LSTM and its logits: a smooth score along the path, which the
    quadrature integrates almost exactly (a ReLU's kink costs it accuracy, whatever the implementation)."""
    keras.utils.set_random_seed(0)
    return get_architecture("row_lstm").build((SIDE, SIDE, 3), 2, lstm_units=(8,), dense_units=())


@pytest.fixture(scope="module")
def integrated_gradients(smooth_row_lstm):
    return IntegratedGradients(smooth_row_lstm)


def random_image(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((SIDE, SIDE, 3)).astype(np.float32)


@pytest.mark.parametrize("shape, averaged_axes", [((2, 5, 7, 3), (1, 2)), ((2, 6, 4), (1,)), ((2, 4), ())])
def test_a_layer_output_is_averaged_over_every_axis_between_batch_and_channels(shape, averaged_axes):
    output = np.random.default_rng(0).random(shape).astype(np.float32)
    pooled = np.asarray(grid_average(tf.constant(output)))
    np.testing.assert_allclose(pooled, output.mean(axis=averaged_axes), rtol=1e-6)
    assert pooled.shape == (shape[0], shape[-1])


def test_attributions_sum_to_the_difference_of_the_scores_as_steps_grow(smooth_row_lstm, integrated_gradients):
    """Completeness (Sundararajan et al. 2017): the attributions of class k sum to its score of the image less
    its score of the black baseline, up to the quadrature's error."""
    image, scores = random_image(), logits_model(smooth_row_lstm)
    difference = np.asarray(scores(image[None]))[0] - np.asarray(scores(np.zeros_like(image)[None]))[0]
    error = {steps: np.abs(explainer.attributions(image).sum(axis=(1, 2, 3)) - difference).max()
             for steps, explainer in [(2, IntegratedGradients(smooth_row_lstm, steps=2)), (32, integrated_gradients)]}
    assert error[32] <= 1e-4 * np.abs(difference).max() + 1e-6
    assert error[2] > 10 * error[32]


def test_attributions_are_zero_where_the_image_equals_the_baseline(integrated_gradients):
    image = random_image()
    image[:, : SIDE // 2] = 0.0
    attributions = integrated_gradients.attributions(image)
    assert attributions.shape == (2, SIDE, SIDE, 3)
    assert not attributions[:, :, : SIDE // 2].any() and attributions[:, :, SIDE // 2:].any()


def test_heatmaps_come_one_per_class_at_the_input_size_with_the_image_scores(smooth_row_lstm, integrated_gradients):
    image = random_image()
    logits, heatmaps, pooled = integrated_gradients.logits_and_heatmaps(image)
    np.testing.assert_allclose(logits, np.asarray(logits_model(smooth_row_lstm)(image[None]))[0], atol=1e-5)
    np.testing.assert_allclose(pooled, logits, atol=1e-6)  # with no pooled layer named, the logits
    assert heatmaps.shape == (2, SIDE, SIDE) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0 and heatmaps.max(axis=(1, 2)) == pytest.approx([1.0, 1.0])


def test_export_names_integrated_gradients_and_the_lstm_features(row_lstm_folder):
    config = model_folder.read_config(row_lstm_folder)
    assert config["explanation"] == {"method": "integrated_gradients", "steps": 32, "baseline": "black"}
    assert "gradcam_layer" not in config and config["out_of_distribution"]["layer"] == "row_lstm3"
    card = (row_lstm_folder / model_folder.CARD_FILE).read_text()
    assert "integrated gradients (Sundararajan et al. 2017)" in card and "integrated-gradients" in card
    assert "Grad-CAM" not in card


def test_a_row_lstm_folder_predicts_with_a_finite_out_of_distribution_score(row_lstm_predictor):
    prediction = row_lstm_predictor.predict_file(png_bytes(synthetic_xray(96, seed=5)))
    assert prediction.label in row_lstm_predictor.class_names
    assert np.isfinite(prediction.ood_score)


def test_a_row_lstm_folder_is_explained_by_integrated_gradients(row_lstm_predictor):
    predictor = row_lstm_predictor
    assert predictor.explanation_method == "integrated gradients"
    image = predictor.load_image(png_bytes(synthetic_xray(96, seed=5, opacity=True)))
    plain = predictor.predict_image(image)
    explained, heatmap = predictor.predict_and_explain(image)
    assert explained.probabilities == pytest.approx(plain.probabilities, abs=1e-5)
    assert explained.ood_score == pytest.approx(plain.ood_score, rel=1e-3)
    assert heatmap.shape == (SIDE, SIDE) and heatmap.min() >= 0 and heatmap.max() == pytest.approx(1.0)
    assert overlay_heatmap(overlay_backdrop(synthetic_xray(96)), heatmap).shape == (448, 448, 3)


def test_a_new_convolutional_folder_names_grad_cam_and_its_layer(tiny_model_folder):
    config = model_folder.read_config(tiny_model_folder)
    layer = get_architecture("cnn_lstm").gradcam_layer
    assert config["explanation"] == {"method": "gradcam", "layer": layer}
    assert config["gradcam_layer"] == layer  # what pneumo 0.2 reads


def test_a_folder_naming_only_a_gradcam_layer_is_explained_by_grad_cam_as_before(tiny_model_folder, tmp_path):
    """pneumo 0.2's pneumo.json: no explanation block, the Grad-CAM layer under `gradcam_layer`."""
    copy = shutil.copytree(tiny_model_folder, tmp_path / "model", ignore=shutil.ignore_patterns("checkpoints"))
    config = model_folder.read_config(copy)
    config["gradcam_layer"] = config.pop("explanation")["layer"]
    model_folder.write_config(copy, config)
    before, after = Predictor.from_folder(tiny_model_folder), Predictor.from_folder(copy)
    assert after.explanation_method == "Grad-CAM"
    image = before.load_image(png_bytes(synthetic_xray(96, seed=5, opacity=True)))
    np.testing.assert_array_equal(after.explain(image), before.explain(image))


@pytest.mark.parametrize("folder", BUNDLED_MODELS, ids=lambda folder: folder.name)
def test_the_released_folders_are_explained_by_their_architectures_method(folder, bundled_predictors):
    """Grad-CAM where the architecture has a convolutional map to read, integrated gradients where not."""
    architecture = get_architecture(model_folder.read_config(folder)["architecture"])
    expected = "Grad-CAM" if architecture.explanation == "gradcam" else "integrated gradients"
    assert bundled_predictors[folder.name].explanation_method == expected


@pytest.mark.parametrize("explanation, words", [({"method": "saliency"}, "unknown explanation method 'saliency'"),
                                                (None, "missing explanation")])
def test_a_folder_with_no_known_explanation_is_refused(row_lstm_folder, tmp_path, explanation, words):
    copy = shutil.copytree(row_lstm_folder, tmp_path / "model", ignore=shutil.ignore_patterns("checkpoints"))
    config = model_folder.read_config(copy)
    if explanation is None:
        del config["explanation"]
    else:
        config["explanation"] = explanation
    model_folder.write_config(copy, config)
    with pytest.raises(ModelLoadError, match=words):
        model_folder.read_config(copy)
