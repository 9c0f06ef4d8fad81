"""Where a model comes from: a local folder, an ensemble folder, or a Hugging Face Hub repo."""

from __future__ import annotations

import difflib
from pathlib import Path

from . import model_folder
from ..prediction.ensemble_predictor import EnsemblePredictor
from ..errors import ModelLoadError, ModelNotFoundError
from .repos import is_hub_reference, resolve_model_folder
from ..prediction.predictor import Predictor


def load_predictor(reference, revision: str | None = None, loaded=(), defer_network: bool = False) -> Predictor:
    """A local model folder, or a Hugging Face Hub repo id `OWNER/NAME[@REVISION]`.

    A reference that means a local path (`model_repos.is_local_path`: models/cnn-lsm among them) is a folder
    here or nothing; one that could be either and is no folder here is tried on the Hub, and an error then
    says both. An ensemble folder (pneumo.training.ensemble) takes its members from `loaded` (predictors already loaded)
    where their weights are the ones it was fitted with, and loads the others from its own member folders.
    `defer_network`: a model folder's network loads when first needed (Predictor.from_folder); an ensemble's now.
    """
    reference = str(reference)
    if not is_hub_reference(reference):
        if not Path(reference).is_dir():
            raise ModelNotFoundError(f"{reference}: no such model folder{nearby_folders(reference)}")
        if model_folder.is_ensemble(reference):
            return EnsemblePredictor.from_folder(reference, loaded)
        return Predictor.from_folder(reference, defer_network=defer_network)
    try:
        folder, resolved_revision = resolve_model_folder(reference, revision)
    except ModelLoadError as error:
        raise type(error)(f"{reference}: no such model folder here, and as a Hub repo: {error}") from None
    return Predictor.from_folder(folder, reference=reference, revision=resolved_revision, defer_network=defer_network)


def nearby_folders(reference: str) -> str:
    """'; did you mean models/cnn-lstm?' for a missing models/cnn-lsm, when its parent folder has a close name."""
    path = Path(reference).expanduser()
    try:
        siblings = [child.name for child in path.parent.iterdir() if child.is_dir()]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, siblings, n=3)
    return f"; did you mean {' or '.join(str(Path(reference).parent / name) for name in close)}?" if close else ""
