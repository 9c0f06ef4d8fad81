"""pneumo: pneumonia detection on pediatric chest X-rays, with models that say why.

Where an image goes in: `pneumo.imaging.decoding.load_model_input`. Where a probability comes out:
`pneumo.load_predictor(reference).predict_file(path)`.
"""

__version__ = "0.2.0"

from .errors import InvalidImageError, ModelLoadError, PneumoError  # noqa: E402
from .hub.loading import load_predictor  # noqa: E402

__all__ = ["__version__", "load_predictor", "PneumoError", "InvalidImageError", "ModelLoadError"]
