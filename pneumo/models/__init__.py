"""Architecture registry: one file per architecture, one line here to add it.

Every architecture returns a Keras model whose layer named "logits" holds the class scores before the
softmax (used by calibration and Grad-CAM) and whose `gradcam_layer` is its last convolutional map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable  # build(input_shape, num_classes, **options) -> keras.Model
    default_input_size: int
    gradcam_layer: str
    description: str
    options: dict = field(default_factory=dict)


def _registry() -> dict[str, Architecture]:
    from . import cnn_lstm, resnet50

    return {arch.name: arch for arch in (cnn_lstm.ARCHITECTURE, resnet50.ARCHITECTURE)}


def get_architecture(name: str) -> Architecture:
    registry = _registry()
    if name not in registry:
        raise KeyError(f"unknown architecture {name!r}; choose one of {', '.join(sorted(registry))}")
    return registry[name]


def architecture_names() -> list[str]:
    return sorted(_registry())
