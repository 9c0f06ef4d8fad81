"""The models that ship with pneumo, by display name, and how a user points them elsewhere.

The demo and `batch_eval.py` both read this list: adding a bundled model is one line here.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Display name -> (environment variable naming another model reference, bundled folder).
BUNDLED_MODELS = {
    "CNN+LSTM": ("PNEUMO_CNN_LSTM_MODEL", REPO_ROOT / "models" / "cnn-lstm"),
    "ResNet50": ("PNEUMO_RESNET50_MODEL", REPO_ROOT / "models" / "resnet50"),
    "MobileNetV2": ("PNEUMO_MOBILENET_V2_MODEL", REPO_ROOT / "models" / "mobilenet-v2"),
}


def model_references(overrides: dict | None = None) -> dict[str, str]:
    """Each bundled model's reference: an override, else its environment variable, else the bundled folder."""
    overrides = overrides or {}
    return {name: overrides.get(name) or os.environ.get(variable) or str(folder)
            for name, (variable, folder) in BUNDLED_MODELS.items()}


def display_name(reference, folder=None) -> str | None:
    """The name the demo gives a model reference (or the folder it resolved to): 'CNN+LSTM' for the bundled
    CNN+LSTM or whatever its environment variable names; None for any other model."""
    for name, bundled in model_references().items():
        if str(reference) == bundled or (folder is not None and Path(bundled).is_dir()
                                         and Path(bundled).resolve() == Path(folder).resolve()):
            return name
    return None
