"""Architecture registry: each model builds, exposes logits and how its heatmaps are drawn, and round-trips
safely."""

import keras
import numpy as np
import pytest

from pneumo.errors import PneumoError
from pneumo.networks import architecture_names, get_architecture


ALL = ["cnn_lstm", "cnn_lstm_lite0", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2",
       "resnet50", "row_lstm"]
CONVOLUTIONAL = [name for name in ALL if name != "row_lstm"]


def test_registry_lists_every_architecture():
    assert architecture_names() == ALL
    with pytest.raises(PneumoError, match="cnn_lstm"):
        get_architecture("vgg")


@pytest.mark.parametrize("name", ALL)
def test_model_outputs_a_softmax_over_two_classes(name):
    arch = get_architecture(name)
    model = arch.build((64, 64, 3), 2)
    probabilities = np.asarray(model(np.random.rand(2, 64, 64, 3).astype("float32")))
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    assert model.get_layer("logits").output.shape[-1] == 2


@pytest.mark.parametrize("name", CONVOLUTIONAL)
def test_convolutional_models_name_a_spatial_map_for_grad_cam(name):
    arch = get_architecture(name)
    model = arch.build((64, 64, 3), 2)
    assert len(model.get_layer(arch.gradcam_layer).output.shape) == 4
    assert arch.explanation == "gradcam"
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # one flat graph


def test_row_lstm_reads_the_image_as_rows_of_all_three_channels():
    model = get_architecture("row_lstm").build((150, 150, 3), 2)
    assert model.get_layer("pixel_rows").output.shape[1:] == (150, 450)
    lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    assert [layer.units for layer in lstms] == [250, 120, 64]
    assert all(layer.dropout == 0.05 and layer.recurrent_dropout == 0.20 for layer in lstms)
    dense = [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert dense == [250, 120, 64, 28, 2]
    assert get_architecture("row_lstm").default_input_size == 150


def test_row_lstm_is_explained_by_integrated_gradients_and_checked_on_its_last_lstm():
    arch = get_architecture("row_lstm")
    assert arch.explanation == "integrated_gradients" and arch.gradcam_layer is None
    model = arch.build((24, 24, 3), 2)
    assert model.get_layer(arch.ood_layer).output.shape[1:] == (64,)


def test_grad_cam_without_a_layer_is_refused_at_registration():
    from pneumo.networks import Architecture

    with pytest.raises(ValueError, match="gradcam_layer"):
        Architecture(name="no_map", build=build_tiny, default_input_size=48, description="one convolution")


def test_cnn_lstm_reads_the_feature_map_as_a_sequence_of_regions():
    model = get_architecture("cnn_lstm").build((160, 160, 3), 2)
    assert model.get_layer("lung_region_sequence").output.shape[1:] == (25, 256)
    assert isinstance(model.get_layer("region_lstm"), keras.layers.LSTM)
    conv = model.get_layer("block1_conv1")
    assert isinstance(conv.kernel_initializer, keras.initializers.HeNormal)


def test_mobilenet_v2_backbone_loads_weights_from_a_file(tmp_path):
    source = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(96, 96, 3))
    path = tmp_path / "backbone.weights.h5"
    source.save_weights(path)
    model = get_architecture("mobilenet_v2").build((96, 96, 3), 2, backbone_weights=str(path))
    np.testing.assert_array_equal(model.get_layer("Conv1").get_weights()[0], source.get_layer("Conv1").get_weights()[0])


def test_resnet50_backbone_loads_weights_from_a_file(tmp_path):
    """The PATH form of --backbone-weights (the imagenet form is the same call with Keras' download)."""
    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    path = tmp_path / "backbone.weights.h5"
    source.save_weights(path)
    model = get_architecture("resnet50").build((64, 64, 3), 2, backbone_weights=str(path))
    np.testing.assert_array_equal(model.get_layer("conv1_conv").get_weights()[0],
                                  source.get_layer("conv1_conv").get_weights()[0])
    assert model.get_layer("to_0_255") is not None  # the ImageNet input scaling came with them


@pytest.mark.parametrize("name", ALL)
def test_models_round_trip_with_safe_mode(tmp_path, name):
    model = get_architecture(name).build((64, 64, 3), 2)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    x = np.random.rand(1, 64, 64, 3).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


def test_resnet50_recipe_trains_the_head_first_only_with_pretrained_weights():
    arch = get_architecture("resnet50")
    assert [stage.name for stage in arch.training_stages(arch.options_for_training(None), 10, 3)] == ["all layers"]
    stages = arch.training_stages(arch.options_for_training("imagenet"), 10, 3)
    assert [(stage.name, stage.last_epoch) for stage in stages] == [("head only", 3), ("fine-tune conv5", 10)]
    assert arch.options_for_rebuild(arch.options_for_training("imagenet")) == {"imagenet_preprocessing": True}
    assert "from scratch" in arch.weights_note(arch.options_for_training(None))


def test_an_architecture_without_a_backbone_refuses_backbone_weights():
    with pytest.raises(PneumoError, match="backbone"):
        get_architecture("cnn_lstm").options_for_training("imagenet")


def build_tiny(input_shape=(64, 64, 3), num_classes=2, width=4):
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="tiny_features")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, keras.layers.Softmax()(logits))


def test_a_new_architecture_is_one_registration_away(synthetic_dataset, tmp_path, monkeypatch):
    """Register, then train, export, load and explain it, touching no other module of the library."""
    from pneumo import load_predictor
    from pneumo import networks
    from pneumo.networks import Architecture
    from pneumo.training.train import main

    monkeypatch.setitem(networks._REGISTRY, "tiny_test", Architecture(
        name="tiny_test", build=build_tiny, default_input_size=48, gradcam_layer="tiny_features",
        description="one convolution"))
    out = tmp_path / "tiny"
    assert main(["--arch", "tiny_test", "--data", str(synthetic_dataset), "--out", str(out), "--epochs", "1",
                 "--batch-size", "8", "--validation-fraction", "0.25"]) == 0
    predictor = load_predictor(out)
    assert predictor.config["architecture"] == "tiny_test" and predictor.height == 48
    image = predictor.load_image(next((synthetic_dataset / "train" / "PNEUMONIA").iterdir()))
    prediction, heatmap = predictor.predict_and_explain(image)
    assert prediction.label in predictor.class_names and heatmap.shape == (48, 48)


def test_row_lstm_gates_remember_up_to_the_whole_sequence():
    """Chrono initialisation: forget-gate biases log(U(1, T - 1)), input-gate biases their negatives."""
    model = get_architecture("row_lstm").build((40, 40, 3), 2, lstm_units=(16, 8), dense_units=(8,))
    for name, units in (("row_lstm1", 16), ("row_lstm2", 8)):
        bias = np.asarray(model.get_layer(name).cell.bias)
        forget = bias[units:2 * units]
        assert forget.min() >= 0 and forget.max() <= np.log(39) and forget.std() > 0.3
        np.testing.assert_allclose(bias[:units], -forget)
