"""Architecture registry: each model builds, exposes logits and its Grad-CAM layer, and round-trips safely."""

import keras
import numpy as np
import pytest

from pneumo.models import architecture_names, get_architecture


def test_registry_lists_both_architectures():
    assert architecture_names() == ["cnn_lstm", "resnet50"]
    with pytest.raises(KeyError, match="cnn_lstm"):
        get_architecture("vgg")


@pytest.mark.parametrize("name", ["cnn_lstm", "resnet50"])
def test_model_outputs_a_softmax_over_two_classes(name):
    arch = get_architecture(name)
    model = arch.build((64, 64, 3), 2)
    probabilities = np.asarray(model(np.random.rand(2, 64, 64, 3).astype("float32")))
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    assert model.get_layer("logits").output.shape[-1] == 2
    assert len(model.get_layer(arch.gradcam_layer).output.shape) == 4  # a spatial feature map


def test_cnn_lstm_reads_the_feature_map_as_a_sequence_of_regions():
    model = get_architecture("cnn_lstm").build((160, 160, 3), 2)
    assert model.get_layer("lung_region_sequence").output.shape[1:] == (25, 256)
    assert isinstance(model.get_layer("region_lstm"), keras.layers.LSTM)
    conv = model.get_layer("block1_conv1")
    assert isinstance(conv.kernel_initializer, keras.initializers.HeNormal)


def test_resnet50_is_one_flat_graph():
    model = get_architecture("resnet50").build((64, 64, 3), 2)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert model.get_layer("conv5_block3_out") is not None


def test_resnet50_backbone_loads_weights_from_a_file(tmp_path):
    """The PATH form of --backbone-weights (the imagenet form is the same call with Keras' download)."""
    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    path = tmp_path / "backbone.weights.h5"
    source.save_weights(path)
    model = get_architecture("resnet50").build((64, 64, 3), 2, backbone_weights=str(path))
    np.testing.assert_array_equal(model.get_layer("conv1_conv").get_weights()[0],
                                  source.get_layer("conv1_conv").get_weights()[0])
    assert model.get_layer("to_0_255") is not None  # the ImageNet input scaling came with them


@pytest.mark.parametrize("name", ["cnn_lstm", "resnet50"])
def test_models_round_trip_with_safe_mode(tmp_path, name):
    model = get_architecture(name).build((64, 64, 3), 2)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    x = np.random.rand(1, 64, 64, 3).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)
