"""One family of exceptions for everything a user can cause.

Each message names the file (or model) and says what to do; tracebacks are for bugs.
"""

from .formats import SUPPORTED_FORMATS_TEXT


class PneumoError(Exception):
    """Base class: an error the user can act on."""


class InvalidImageError(PneumoError, ValueError):
    """An input file cannot be used as a chest X-ray."""

    reason = "invalid image"

    def __init__(self, source, detail=""):
        self.source = str(source)
        self.detail = detail
        message = f"{self.source}: {self.reason}"
        super().__init__(f"{message} ({detail})" if detail else message)


class EmptyFileError(InvalidImageError):
    reason = "the file is empty"


class NotAnImageError(InvalidImageError):
    reason = "not an image"

    def __init__(self, source, detail=f"pneumo reads {SUPPORTED_FORMATS_TEXT} files"):
        super().__init__(source, detail)


class UnsupportedFormatError(InvalidImageError):
    reason = "unsupported image format"


class CorruptImageError(InvalidImageError):
    reason = "the image data is truncated or corrupt"


class ImageTooSmallError(InvalidImageError):
    reason = "the image is too small to be a chest X-ray"


class ImageTooLargeError(InvalidImageError):
    reason = "the image is too large to decode safely"


class ModelLoadError(PneumoError):
    """A model reference cannot be turned into a predictor."""


class ModelNotFoundError(ModelLoadError):
    """No model folder or Hub repo answers to the reference."""


class HubUnavailableError(ModelLoadError):
    """The Hugging Face Hub cannot be reached and nothing usable is cached."""


class SpaceDeployError(PneumoError, ValueError):
    """A Space cannot be deployed as asked: a malformed repo id, the wrong models, a file missing from the
    working tree, or credentials the Hub refuses."""


class DataFolderError(PneumoError):
    """A folder that should hold labeled images (or a dataset root, or a scored run) does not."""


class NothingToScoreError(DataFolderError):
    """The folder (or shard) holds no file at all."""


class UnknownArchitectureError(PneumoError, ValueError):
    """No architecture is registered under that name."""


class TrainingOptionError(PneumoError, ValueError):
    """A training option that the chosen architecture cannot honour."""


class AdaptationError(PneumoError):
    """A model or a set of images that adaptation to a site (pneumo.site.adapt) cannot use, with the reason."""


class RunStalledError(PneumoError):
    """A batch run made no progress for its stall timeout and was stopped; what it scored is kept for --resume."""


class StorageReadError(PneumoError):
    """A file listed for scoring that a worker could not read (the storage's settings, or a folder not at the same
    path on every node)."""
