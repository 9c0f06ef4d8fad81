"""What an architecture is (its build function and its recipe) and the registry it joins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import TrainingOptionError

LOGITS_LAYER = "logits"


@dataclass(frozen=True)
class Stage:
    """Part of a training run: up to epoch `last_epoch`, with `set_trainable(model)` run first (which layers
    learn) and the learning rate scaled by `learning_rate_factor`."""

    name: str
    last_epoch: int
    set_trainable: Callable | None = None
    learning_rate_factor: float = 1.0


def _no_pretrained_weights(backbone_weights):
    if backbone_weights is not None:
        raise TrainingOptionError("this architecture has no pretrained backbone; omit --backbone-weights")
    return {}


def pretrained_backbone_options(backbone_weights: str | None) -> dict:
    """`options_for_training` of an architecture whose backbone can start from pretrained weights."""
    return {"backbone_weights": backbone_weights}


def backbone_weights_note(backbone: str, with_internet: str = "") -> Callable[[dict], str]:
    """`weights_note` of such an architecture: where its backbone's weights started."""
    def note(options: dict) -> str:
        if options.get("backbone_weights") is None:
            return (f"**Trained from scratch.** The {backbone} backbone starts from random weights: the environment "
                    "that built this model has no internet and no copy of the ImageNet weights."
                    + (f" {with_internet}" if with_internet else ""))
        return f"The backbone started from pretrained weights ({options['backbone_weights']})."
    return note


def _one_stage(options, epochs, head_epochs):
    return [Stage("all layers", epochs)]


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable  # build(input_shape, num_classes, **options) -> keras.Model
    default_input_size: int
    description: str
    # How its heatmaps are drawn (pneumo.explain.methods): "gradcam" on `gradcam_layer`, its last convolutional
    # map, or "integrated_gradients" for a model without one.
    gradcam_layer: str | None = None
    explanation: str = "gradcam"
    # The build options for a training run, from --backbone-weights (None, "imagenet" or a file path).
    options_for_training: Callable[[str | None], dict] = _no_pretrained_weights
    # The build options that rebuild a trained graph without fetching pretrained weights again.
    options_for_rebuild: Callable[[dict], dict] = field(default=lambda options: dict(options))
    # training_stages(options, epochs, head_epochs) -> [Stage, ...]
    training_stages: Callable = _one_stage
    # A sentence for the model card about where the weights started, or "".
    weights_note: Callable[[dict], str] = field(default=lambda options: "")
    # The layer whose grid average the out-of-distribution check measures (pneumo.prediction.ood); None: the Grad-CAM
    # layer.
    ood_layer: str | None = None

    def __post_init__(self):
        if self.explanation == "gradcam" and not self.gradcam_layer:
            raise ValueError(f"architecture {self.name}: Grad-CAM needs a gradcam_layer")
        if not (self.ood_layer or self.gradcam_layer):
            raise ValueError(f"architecture {self.name}: name the ood_layer the out-of-distribution check measures")


_REGISTRY: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    """Add an architecture (the built-in ones register themselves when their module is imported)."""
    _REGISTRY[architecture.name] = architecture
    return architecture


def classifier_head(features, num_classes: int):
    """The last two layers every architecture shares: the class scores before the softmax (the layer named
    "logits", which calibration and the heatmaps read) and the softmax over them."""
    from keras import layers

    logits = layers.Dense(num_classes, name=LOGITS_LAYER)(features)
    return layers.Softmax(name="probabilities")(logits)


def logits_model(model, layer: str = LOGITS_LAYER):
    """The sub-model from the input to the class scores before the softmax."""
    import keras

    return keras.Model(model.input, model.get_layer(layer).output)
