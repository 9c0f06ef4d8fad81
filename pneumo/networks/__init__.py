"""Architecture registry: one file per architecture, one line here to add it (like timm's registry).

An `Architecture` carries everything specific to it: how to build it, its default input size, how its
heatmaps are drawn (Grad-CAM on which layer, or integrated gradients), what pretrained backbone weights
mean for it and its training stages. Training, export and the model card ask it; none of them tests an
architecture's name.

Every architecture returns a Keras model whose layer named "logits" holds the class scores before the
softmax (used by calibration and the heatmaps); a convolutional one names its last convolutional map as
its `gradcam_layer`.
"""

from __future__ import annotations

from ..errors import UnknownArchitectureError
from .architecture import _REGISTRY, LOGITS_LAYER, Architecture, Stage, logits_model, register

__all__ = ["Architecture", "Stage", "LOGITS_LAYER", "register", "get_architecture", "architecture_names",
           "logits_model"]


def _registry() -> dict[str, Architecture]:
    from . import cnn_lstm, efficientnet_lite, mobilenet_v2, resnet50, row_lstm  # noqa: F401  (importing registers them)

    return _REGISTRY


def get_architecture(name: str) -> Architecture:
    registry = _registry()
    if name not in registry:
        raise UnknownArchitectureError(f"unknown architecture {name!r}; choose one of {', '.join(sorted(registry))}")
    return registry[name]


def architecture_names() -> list[str]:
    return sorted(_registry())
