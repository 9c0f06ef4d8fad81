"""The models that ship with pneumo, by display name, and how a user points them elsewhere.

The demo and `batch_eval.py` both read this list: adding a bundled model is one line here.
PNEUMO_MODELS (comma-separated display names) narrows it, e.g. on a Space deployed with fewer model repos.
`load_models` loads them (the demo reads their folders first and loads their networks behind its page:
pneumo.demo.network_loader).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelLoadError, ModelNotFoundError
from .loading import load_predictor

REPO_ROOT = Path(__file__).resolve().parents[2]
# Display name -> (environment variable naming another model reference, bundled folder).
BUNDLED_MODELS = {
    "CNN+LSTM": ("PNEUMO_CNN_LSTM_MODEL", REPO_ROOT / "models" / "cnn-lstm"),
    "ResNet50": ("PNEUMO_RESNET50_MODEL", REPO_ROOT / "models" / "resnet50"),
    "MobileNetV2": ("PNEUMO_MOBILENET_V2_MODEL", REPO_ROOT / "models" / "mobilenet-v2"),
    "Row LSTM": ("PNEUMO_ROW_LSTM_MODEL", REPO_ROOT / "models" / "row-lstm"),
    "EfficientNet-Lite0": ("PNEUMO_EFFICIENTNET_LITE0_MODEL", REPO_ROOT / "models" / "efficientnet-lite0"),
}

SELECTION_VARIABLE = "PNEUMO_MODELS"


def selected_models() -> list[str]:
    """The bundled models to load, in BUNDLED_MODELS' order: those PNEUMO_MODELS names (display or folder names),
    else all of them."""
    listed = [bundled_name(name) or name.strip()
              for name in os.environ.get(SELECTION_VARIABLE, "").split(",") if name.strip()]
    unknown = [name for name in listed if name not in BUNDLED_MODELS]
    if unknown:
        raise ModelLoadError(f"{SELECTION_VARIABLE} names {', '.join(unknown)}; the bundled models are "
                             f"{', '.join(BUNDLED_MODELS)}")
    return [name for name in BUNDLED_MODELS if name in listed] if listed else list(BUNDLED_MODELS)


def bundled_name(name: str) -> str | None:
    """The display name of the bundled model `name` names, by its display name or its folder's ('ResNet50',
    'resnet50'), in any case; None for any other name."""
    wanted = str(name).strip().casefold()
    for shown, (_, folder) in BUNDLED_MODELS.items():
        if wanted in (shown.casefold(), folder.name.casefold()):
            return shown
    return None


def bundled_reference(name: str) -> str | None:
    """The reference of the bundled model `name` names (`bundled_name`): its environment variable's, else its
    folder; None for any other name."""
    shown = bundled_name(name)
    if shown is None:
        return None
    variable, folder = BUNDLED_MODELS[shown]
    return os.environ.get(variable) or str(folder)


def model_references(overrides: dict | None = None) -> dict[str, str]:
    """Each selected bundled model's reference: an override, else its environment variable, else the bundled
    folder."""
    overrides, selected = overrides or {}, selected_models()
    return {name: overrides.get(name) or os.environ.get(variable) or str(folder)
            for name, (variable, folder) in BUNDLED_MODELS.items() if name in selected}


def display_name(reference, folder=None) -> str | None:
    """The name the demo gives a model reference (or the folder it resolved to): 'CNN+LSTM' for the bundled
    CNN+LSTM or whatever its environment variable names; None for any other model."""
    for name, bundled in model_references().items():
        if str(reference) == bundled or (folder is not None and Path(bundled).is_dir()
                                         and Path(bundled).resolve() == Path(folder).resolve()):
            return name
    return None


def load_models(references: dict[str, str], defer_networks: bool = False, show_progress: bool = False) -> dict:
    """Each named model (name -> reference, as `model_references` gives them), loaded once. A bundled model whose
    folder is missing (a Space deployed before that model was bundled, say) is refused with the two ways out:
    its Hub repo, or PNEUMO_MODELS without it. `defer_networks`: what each folder's pneumo.json says is read now,
    and each network when first needed (pneumo.prediction.predictor), or by the demo's loader (pneumo.demo.network_loader).
    `show_progress`: a bar on stderr names each model as it loads (seconds each)."""
    from tqdm import tqdm

    predictors = {}
    for name, reference in tqdm(references.items(), desc="loading models", unit="model",
                                disable=not show_progress):
        try:
            predictor = load_predictor(reference, loaded=list(predictors.values()), defer_network=defer_networks)
            # A name given here is the model's display name; a bare reference (batch_eval.py --model) gets the
            # bundled model's name when it points at one.
            predictor.display_name = (name if isinstance(name, str) else
                                      display_name(reference, predictor.folder)) or predictor.name
            predictors[name] = predictor
        except ModelNotFoundError as error:
            variable, folder = BUNDLED_MODELS.get(name, (None, None))
            if reference != str(folder):
                raise
            raise ModelNotFoundError(f"{error}: set {variable} to the {name}'s Hub repo, or "
                                     f"{SELECTION_VARIABLE} to the models to load (e.g. "
                                     f"{','.join(other for other in references if other != name)})") from None
    return predictors
