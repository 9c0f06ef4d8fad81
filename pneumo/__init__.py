"""pneumo: pneumonia detection on pediatric chest X-rays, with models that say why.

Where an image goes in: `pneumo.imaging.load_model_input`. Where a probability comes out:
`pneumo.load_predictor(reference).predict_file(path)`.
"""

__version__ = "0.2.0"

from .errors import InvalidImageError, ModelLoadError, PneumoError  # noqa: E402


def load_predictor(reference, revision=None, loaded=()):
    """A ready predictor from a model folder path or a Hub repo id (`OWNER/NAME[@REVISION]`); an ensemble
    folder reuses its members from the predictors `loaded`, where their weights are the ones it was fitted with."""
    from .loading import load_predictor as _load

    return _load(reference, revision, loaded)


__all__ = ["__version__", "load_predictor", "PneumoError", "InvalidImageError", "ModelLoadError"]
