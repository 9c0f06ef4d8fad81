"""The one path an image takes: decode -> validate -> preprocess.

Training, export and calibration, robustness, ensembles, the demo, the PDF and batch scoring (local and
Ray) all turn a file into a model's input with `load_model_input` (or, to perturb the plane on the way,
`decode_for_model` then `Preprocessing.model_input`), so the same file gives the same tensor, and the same
probability, everywhere, and a threshold is fitted on the path it is used on.

The decode is reduced: a JPEG is decoded inside libjpeg at the smallest scale whose sides are still at
least twice the model's input side (`decode_side`). Chosen over a full decode because a 2048 px radiograph
then decodes about ten times faster and in a sixteenth of the memory, on a 2-core demo as in a folder of
thousands, while the area resize from twice the input's side matches the one from the full image (see
`load_model_input`). The training images (224 px) are below that side, so they decode whole either way.

Every format is reduced to a single grayscale plane in [0, 1] before resizing, so an X-ray saved as an
RGB JPEG, an 8-bit grayscale PNG or a 16-bit PNG reaches the model as (nearly) the same array.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import dicom_worker
from ..errors import (
    CorruptImageError,
    EmptyFileError,
    ImageTooLargeError,
    ImageTooSmallError,
    InvalidImageError,
    NotAnImageError,
    UnsupportedFormatError,
)
from ..formats import SUPPORTED_FORMATS_TEXT

ImageSource = Union[str, os.PathLike, bytes]

# The smallest side a real radiograph could have; anything smaller is an icon or a mistake.
MIN_SIDE = 64
# Checked from the header, before any pixel is decoded (a decompression bomb is a small file that
# expands to billions of pixels). 50 MP is well above any clinical detector (~20 MP).
MAX_PIXELS = 50_000_000
MAX_FILE_BYTES = 512 * 1024 * 1024
# A DICOM may hold several frames (only the first is decoded), but its header may not claim more stored values
# over all frames and samples than the largest file read (MAX_FILE_BYTES) holds at 16 bits: a header claiming
# a billion frames is refused before anything is decoded.
MAX_STORED_VALUES = MAX_FILE_BYTES // 2
# DICOM values longer than this stay in the file's bytes when the header is read (the pixel data, above all),
# so that only the first frame is ever copied out of them.
DICOM_DEFERRED_BYTES = 64 * 1024
PIL_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "TIFF"}
# DICOM transfer syntaxes whose pixel data is stored as it is (implicit and explicit VR little endian, explicit VR
# big endian): pydicom reads them in this process. Any other is compressed and decoded in a worker process
# (pneumo.imaging.dicom_worker): GDCM ends the process it runs in on some malformed files.
NATIVE_DICOM_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
# Deflated Explicit VR Little Endian: the whole data set is zlib-compressed, and pydicom inflates all of it
# while reading the header, with no limit (a file of a megabyte could inflate to gigabytes). Not read.
DEFLATED_DICOM_SYNTAX = "1.2.840.10008.1.2.1.99"
# A model's input is decoded at no less than this multiple of its side (see load_model_input).
REDUCED_DECODE_FACTOR = 2
# ITU-R BT.601 luma, the weights PIL uses for RGB -> L.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
LUMA_ROWS = 256  # rows of a colour image reduced to luma at a time


def read_bytes(source: ImageSource) -> tuple[bytes, str]:
    """The raw bytes of `source` and a name to use in messages."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "<uploaded image>"
    path = Path(source)
    name = str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise NotAnImageError(name, "no such file") from None
    except OSError as error:
        raise NotAnImageError(name, error.strerror or str(error)) from None
    if path.is_dir():
        raise NotAnImageError(name, "it is a folder")
    check_file_size(size, name)
    return path.read_bytes(), name


def check_file_size(size: int, name: str) -> None:
    """Refuse a file too large to read whole, from its size alone (before reading it)."""
    if size > MAX_FILE_BYTES:
        raise ImageTooLargeError(name, f"{size / 2**20:.0f} MB file, limit {MAX_FILE_BYTES // 2**20} MB")


def is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def check_dimensions(width: int, height: int, name: str, frames: int = 1, samples: int = 1) -> None:
    """Refuse, from the header alone, an image too large to decode safely (more than MAX_PIXELS a frame, or more
    than MAX_STORED_VALUES over all its `frames` and `samples` per pixel) or too small to be a radiograph."""
    if width * height > MAX_PIXELS:
        raise ImageTooLargeError(name, f"{width}x{height} pixels, limit {MAX_PIXELS:,} pixels")
    if frames * samples * width * height > MAX_STORED_VALUES:
        raise ImageTooLargeError(name, f"{frames:,} frames of {width}x{height} pixels x {samples} samples, limit "
                                       f"{MAX_STORED_VALUES:,} values over all frames")
    if min(width, height) < MIN_SIDE:
        raise ImageTooSmallError(name, f"{width}x{height} pixels, at least {MIN_SIDE} pixels a side needed")


def read_grayscale(source: ImageSource, min_side: int | None = None) -> np.ndarray:
    """Decode any supported file into a 2-D float32 array in [0, 1] (0 = black).

    With `min_side`, a JPEG is decoded inside libjpeg at the smallest of 1/1, 1/2, 1/4 or 1/8 scale whose
    sides are still at least `min_side` pixels: a 2048 px radiograph for a 224 px model decodes at 512 px,
    about ten times faster. The other formats have no reduced decode and are read whole. A model's input
    comes from `decode_for_model`, which sets `min_side` from the model's size; this is for display.
    """
    return DecodedFile(source).plane(min_side)


class DecodedFile:
    """One file, read once and decoded at most once per decode scale: the models of a comparison, its preview
    and its heatmap backdrop share the planes they can. A JPEG's requests that libjpeg answers at the same
    reduced scale share that decode; any other format is decoded whole, once, whatever the request."""

    def __init__(self, source: "ImageSource | DecodedFile"):
        if isinstance(source, DecodedFile):
            self.data, self.name = source.data, source.name
            self._planes, self._scales = source._planes, source._scales
            return
        self.data, self.name = read_bytes(source)
        self._planes: dict[int, np.ndarray] = {}  # decode scale (1/n) -> plane
        self._scales: dict[int | None, int] = {}  # min_side -> decode scale

    def plane(self, min_side: int | None = None) -> np.ndarray:
        """The decoded [0, 1] plane, at reduced scale for a JPEG when `min_side` allows (see read_grayscale)."""
        if min_side not in self._scales:
            self._scales[min_side] = reduced_decode_scale(self.data, min_side)
        scale = self._scales[min_side]
        if scale not in self._planes:
            self._planes[scale] = _decode(self.data, self.name, min_side)
        return self._planes[scale]

    def for_model(self, height: int, width: int) -> np.ndarray:
        """The plane a model of that input size reads: the one decode of the image path."""
        return self.plane(decode_side(height, width))


def reduced_decode_scale(data: bytes, min_side: int | None) -> int:
    """n, when a decode for `min_side` is at 1/n scale: what libjpeg's reduced decode gives a JPEG (read from its
    header, as the decode will), 1 for any other file and for one whose header cannot be read (its decode says
    why)."""
    if not min_side or not data.startswith(b"\xff\xd8"):  # JPEG's start-of-image marker
        return 1
    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in ("JPEG", "MPO"):
            return 1
        image.draft(image.mode, (min_side, min_side))
        return int(image.decoderconfig[0]) if image.decoderconfig else 1
    except Exception:  # noqa: BLE001  (the decode itself reports what is wrong with the file)
        return 1


def _decode(data: bytes, name: str, min_side: int | None = None) -> np.ndarray:
    """The file's [0, 1] plane, or an InvalidImageError that names the file: never another exception.

    The decoders name the failures they know (a truncated JPEG, a transfer syntax without a decoder); what else
    a parser raises on a hostile file (pydicom meets a broken header with AttributeError, KeyError, IndexError,
    TypeError...) is reported as a corrupt file, chained to the original error for whoever debugs it, so that
    one bad file is one skipped file, never the end of a folder's run.
    """
    if not data:
        raise EmptyFileError(name)
    try:
        return _decode_dicom(data, name) if is_dicom(data) else _decode_pil(data, name, min_side)
    except InvalidImageError:
        raise
    except MemoryError:
        raise ImageTooLargeError(name, "out of memory while decoding it") from None
    except Exception as error:
        raise CorruptImageError(name, f"{type(error).__name__}: {error}") from error


def _decode_pil(data: bytes, name: str, min_side: int | None = None) -> np.ndarray:
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise NotAnImageError(name) from None
    except Image.DecompressionBombError as error:  # Pillow's own guard, left on for the whole process
        raise ImageTooLargeError(name, str(error)) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise CorruptImageError(name, str(error)) from None
    if image.format not in PIL_FORMATS:
        raise UnsupportedFormatError(name, f"{image.format}; use {SUPPORTED_FORMATS_TEXT}")
    # Checked from the header before any pixel is decoded: our limit (MAX_PIXELS) is below Pillow's.
    check_dimensions(*image.size, name)
    if min_side and image.format in ("JPEG", "MPO"):
        image.draft(image.mode, (min_side, min_side))  # a square request: an EXIF rotation changes nothing
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise CorruptImageError(name, str(error)) from None
    gray = _pil_to_unit_gray(image)
    if image.mode == "F" and not np.isfinite(gray).all():  # a float TIFF holding NaN, infinity, or a range past float32's
        raise CorruptImageError(name, "pixel values that are not finite numbers")
    return gray


def _pil_to_unit_gray(image: Image.Image) -> np.ndarray:
    """The decoded image as one float32 plane in [0, 1]. No float copy of the whole image is made beside the
    plane itself (a 50-megapixel RGB image as float32 would be 600 MB): integers become floats in place, and
    colour is reduced to luma a band of rows at a time."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale (PNG/TIFF). Pillow may present it as 32-bit "I"; the range is still 16-bit.
        pixels = np.asarray(image, dtype=np.float32)  # converted from integers: a new array, written in place
        pixels /= 65535.0
        return np.clip(pixels, 0.0, 1.0, out=pixels)
    if mode == "F":
        return _min_max(np.asarray(image, dtype=np.float32))
    if mode in ("L", "LA", "1"):
        pixels = np.asarray(image if mode == "L" else image.convert("L"), dtype=np.float32)
        pixels /= 255.0
        return pixels
    return _luma(image)


def _luma(image: Image.Image) -> np.ndarray:
    """BT.601 luma in [0, 1] of a colour image (RGB, RGBA, CMYK, palette...), LUMA_ROWS rows at a time: the same
    values as the whole image at once, in a float32 band instead of a float32 copy of the whole image."""
    width, height = image.size
    gray = np.empty((height, width), np.float32)
    for top in range(0, height, LUMA_ROWS):
        band = image.crop((0, top, width, min(top + LUMA_ROWS, height))).convert("RGB")
        gray[top:top + band.height] = np.asarray(band, dtype=np.float32) @ LUMA
    gray /= 255.0
    return gray


def _decode_dicom(data: bytes, name: str) -> np.ndarray:
    """The first frame of a DICOM file as a [0, 1] plane (bone bright).

    The header is read and checked first; then only the first frame is decoded, straight from the file's bytes,
    so a file of many frames costs one frame's memory. Stored values go through the modality LUT
    (slope/intercept), then the display window the scanner chose.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    if _transfer_syntax(data) == DEFLATED_DICOM_SYNTAX:
        raise UnsupportedFormatError(name, f"DICOM transfer syntax {DEFLATED_DICOM_SYNTAX} (deflated data set) is not "
                                           "read; save the file uncompressed or with compressed pixel data")
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), defer_size=DICOM_DEFERRED_BYTES)
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError) as error:
        raise CorruptImageError(name, f"unreadable DICOM: {error}") from None
    if "PixelData" not in dataset:
        raise NotAnImageError(name, "DICOM file without pixel data")
    samples = int(dataset.get("SamplesPerPixel", 1))
    check_dimensions(int(dataset.get("Columns", 0)), int(dataset.get("Rows", 0)), name,
                     frames=int(dataset.get("NumberOfFrames", 1) or 1), samples=samples)
    if samples not in (1, 3):
        raise UnsupportedFormatError(name, f"DICOM with {samples} samples per pixel; pneumo reads 1 (grayscale) or 3")
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    try:
        if syntax in NATIVE_DICOM_SYNTAXES:
            pixels = pixel_array(io.BytesIO(data), index=0)
        else:
            pixels = dicom_worker.first_frame(data)
    except (NotImplementedError, RuntimeError) as error:
        # pydicom raises NotImplementedError where no decoder takes the syntax, and RuntimeError with each
        # decoder's reason where all failed: "does not support" a variant (12-bit JPEG Extended), or damaged data.
        if isinstance(error, NotImplementedError) or "does not support" in str(error):
            raise UnsupportedFormatError(name, f"DICOM transfer syntax {syntax or 'unknown'} cannot be decoded: "
                                               f"{error}") from None
        raise CorruptImageError(name, f"its compressed pixel data cannot be decoded: {error}") from None
    except dicom_worker.DecoderCrashed as error:
        raise CorruptImageError(name, f"the decoder of its compressed pixel data {error}") from None
    except (ValueError, EOFError, OSError) as error:
        raise CorruptImageError(name, str(error)) from None
    if samples == 3:
        return _min_max(np.asarray(pixels, dtype=np.float32) @ LUMA)
    try:
        values = apply_modality_lut(pixels, dataset)
        if "WindowCenter" in dataset or "VOILUTSequence" in dataset:
            values = apply_voi_lut(values, dataset)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        raise CorruptImageError(name, f"unusable DICOM rescale or display window: {error}") from None
    with np.errstate(over="ignore"):  # a value beyond float32's range becomes inf, refused just below
        values = np.asarray(values, dtype=np.float32)
    if not np.isfinite(values).all():
        raise CorruptImageError(name, "the DICOM rescale gives values that are not finite")
    gray = _min_max(values)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        gray = 1.0 - gray  # MONOCHROME1 stores bone as dark; models expect bone bright.
    return gray


def _transfer_syntax(data: bytes) -> str | None:
    """The Transfer Syntax UID of a DICOM file's meta information, read from its bytes (the meta information is
    always explicit VR little endian, right after the preamble), before pydicom reads the rest."""
    at = data.find(b"\x02\x00\x10\x00UI", 132, 132 + 4096)
    if at < 0 or at + 8 > len(data):
        return None
    (length,) = struct.unpack_from("<H", data, at + 6)
    return data[at + 8:at + 8 + length].rstrip(b"\x00 ").decode("ascii", "replace")


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # a range past float32's: not finite, refused by the caller
        return ((values - low) / (high - low)).astype(np.float32)


def percentile_window(gray: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Map the `low`..`high` percentiles of the image to 0..1, clipping the tails.

    Linear, so an image holding 10-, 12- or 14-bit data in a 16-bit file comes out like its 8-bit copy;
    the tails (burned-in labels, collimator edges, a few hot pixels) no longer set the scale.
    """
    lo, hi = np.percentile(gray, [low, high])
    if hi <= lo:
        return np.zeros_like(gray, dtype=np.float32)
    return np.clip((gray - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def equalize(gray: np.ndarray, bins: int = 4096) -> np.ndarray:
    """Global histogram equalisation: each pixel becomes the fraction of the image darker than it.

    Invariant to any increasing change of the grey levels (gain, black level, gamma, window, bit depth)
    up to the `bins` levels between the image's own minimum and maximum. Computed in two image-sized
    buffers (a full-size decode is megapixels, and this runs for every image scored).
    """
    lo, hi = float(gray.min()), float(gray.max())
    if hi <= lo:
        return np.zeros_like(gray, dtype=np.float32)
    scaled = np.subtract(gray, lo, dtype=np.float32)
    scaled /= hi - lo
    scaled *= bins
    levels = scaled.astype(np.intp)  # the index type: bincount and take convert nothing
    np.minimum(levels, bins - 1, out=levels)
    histogram = np.bincount(levels.ravel(), minlength=bins)
    cdf = np.cumsum(histogram, dtype=np.float64)
    darkest = cdf[np.flatnonzero(histogram)[0]]
    cdf = ((cdf - darkest) / max(cdf[-1] - darkest, 1.0)).astype(np.float32)
    return np.take(cdf, levels, out=scaled)


# The intensity normalisations a model folder can name. "decoder_scale" keeps what decoding gives
# (8-bit / 255, 16-bit / 65535, DICOM min-max): the scaling every model trained before 0.2 saw.
INTENSITY_METHODS = {
    "decoder_scale": lambda gray: gray,
    "percentile_window": percentile_window,
    "equalize": equalize,
}
INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


# The smoothing's largest sigma, in pixels of the model's input: past a few pixels a 224 px model reads a blur.
MAX_SMOOTHING = 4.0


@dataclass(frozen=True)
class Preprocessing:
    """The `preprocessing` block of a model folder's pneumo.json, and the function it describes.

    grayscale plane in [0, 1] -> intensity normalisation -> resize (`shrink` when the image is larger
    than the input, `enlarge` otherwise; aspect ratio not kept) -> optional Gaussian smoothing -> the plane
    repeated over 3 channels.

    `smoothing` is the Gaussian's sigma in pixels of the model's input (0: none). It takes away the finest detail,
    which is what differs most between two files of one X-ray (a JPEG's blocks, an upscale's resampling): with
    sigma 1.0 and no retraining, the first EfficientNet-Lite0's probability moved past 0.02 on 1.7% of the validation
    X-rays sent as 2048 px upscales, against 6.7% without; the released one, fine-tuned with it, on 1.4%
    (docs/training.md).
    """

    intensity: dict = field(default_factory=lambda: {"method": "decoder_scale"})
    shrink: str = "area"
    enlarge: str = "linear"
    smoothing: float = 0.0

    def __post_init__(self):
        method = self.intensity.get("method")
        if method not in INTENSITY_METHODS:
            raise ValueError(f"unknown intensity normalisation {method!r}; "
                             f"one of {', '.join(INTENSITY_METHODS)}")
        for interpolation in (self.shrink, self.enlarge):
            if interpolation not in INTERPOLATIONS:
                raise ValueError(f"unknown interpolation {interpolation!r}; one of {', '.join(INTERPOLATIONS)}")
        if not 0 <= self.smoothing <= MAX_SMOOTHING:
            raise ValueError(f"smoothing sigma {self.smoothing} is outside 0-{MAX_SMOOTHING} pixels")

    @classmethod
    def from_config(cls, block) -> "Preprocessing":
        """Read a config block. A block without `intensity` (the prose of pneumo 0.1) is the scaling those
        models were trained with: the decoder's own, INTER_AREA to shrink and INTER_LINEAR to enlarge."""
        block = block if isinstance(block, dict) else {}
        resize = block.get("resize") if isinstance(block.get("resize"), dict) else {}
        smoothing = block.get("smoothing") or {}
        if not isinstance(smoothing, dict) or smoothing.get("method", "gaussian") != "gaussian":
            # A folder that asks for a smoothing this version cannot do would score its inputs unsmoothed.
            raise ValueError(f"unknown smoothing {smoothing!r}; this pneumo smooths with a Gaussian only")
        return cls(intensity=dict(block.get("intensity") or {"method": "decoder_scale"}),
                   shrink=resize.get("shrink", "area"), enlarge=resize.get("enlarge", "linear"),
                   smoothing=float(smoothing.get("sigma", 0.0)))

    def to_config(self) -> dict:
        smoothing = {"smoothing": {"method": "gaussian", "sigma": self.smoothing}} if self.smoothing else {}
        return {"decode": "grayscale", "intensity": dict(self.intensity),
                "resize": {"shrink": self.shrink, "enlarge": self.enlarge, "keep_aspect_ratio": False},
                **smoothing, "channels": 3, "range": [0.0, 1.0]}

    def normalise(self, gray: np.ndarray) -> np.ndarray:
        options = {key: value for key, value in self.intensity.items() if key != "method"}
        return INTENSITY_METHODS[self.intensity["method"]](gray, **options)

    def model_input(self, gray: np.ndarray, height: int, width: int) -> np.ndarray:
        """A decoded [0, 1] plane as the model's input: (height, width, 3) float32 in [0, 1]."""
        gray = self.normalise(np.asarray(gray, dtype=np.float32))
        shrinking = gray.shape[0] > height or gray.shape[1] > width
        interpolation = INTERPOLATIONS[self.shrink if shrinking else self.enlarge]
        resized = cv2.resize(gray, (width, height), interpolation=interpolation)
        if self.smoothing:
            resized = cv2.GaussianBlur(resized, (0, 0), self.smoothing)
        resized = np.clip(resized, 0.0, 1.0).astype(np.float32)
        return np.repeat(resized[:, :, None], 3, axis=2)


DECODER_SCALE = Preprocessing()


def decode_side(height: int, width: int) -> int:
    """The smallest side a model of that input size is decoded at (REDUCED_DECODE_FACTOR times its own)."""
    return REDUCED_DECODE_FACTOR * max(height, width)


def decode_for_model(source: "ImageSource | DecodedFile", height: int, width: int) -> np.ndarray:
    """decode -> validate: the [0, 1] plane a model of that input size reads for `source`."""
    return DecodedFile(source).for_model(height, width)


def load_model_input(source: "ImageSource | DecodedFile", height: int, width: int,
                     preprocessing: Preprocessing = DECODER_SCALE) -> np.ndarray:
    """decode -> validate -> preprocess: the tensor a model of that input size sees for `source`.

    A JPEG is decoded at reduced scale, but at no less than twice the input's side: the area resize from
    there matches the one from the full image. At 1x the DCT's own downscaling shows; on a 2048 px JPEG of
    a validation X-ray the CNN+LSTM's probability moved 0.049 from the full decode at 1x, 0.017 at 2x.
    """
    return preprocessing.model_input(decode_for_model(source, height, width), height, width)


def decode_many_for_model(sources, height: int, width: int) -> list[np.ndarray]:
    """`decode_for_model` of many files, on threads (libjpeg and OpenCV release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor() as pool:
        return list(pool.map(lambda source: decode_for_model(str(source), height, width), sources))
