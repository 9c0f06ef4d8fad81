"""Where a model comes from: a local folder, an ensemble folder, or a Hugging Face Hub repo."""

from __future__ import annotations

from pathlib import Path

from . import model_folder
from .ensemble_predictor import EnsemblePredictor
from .model_repos import is_hub_reference, resolve_model_folder
from .predictor import Predictor


def load_predictor(reference, revision: str | None = None, loaded=()) -> Predictor:
    """A local model folder, or a Hugging Face Hub repo id `OWNER/NAME[@REVISION]`.

    An ensemble folder (pneumo.ensemble) takes its members from `loaded` (predictors already loaded) where
    their weights are the ones it was fitted with, and loads the others from its own member folders.
    """
    if Path(reference).is_dir() or not is_hub_reference(str(reference)):
        if model_folder.is_ensemble(reference):
            return EnsemblePredictor.from_folder(reference, loaded)
        return Predictor.from_folder(reference)
    folder, resolved_revision = resolve_model_folder(str(reference), revision)
    return Predictor.from_folder(folder, reference=str(reference), revision=resolved_revision)
