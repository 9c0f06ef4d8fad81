"""A large upload costs one decode: the X-ray preview, the heatmaps' backdrop and the models' inputs share it,
a JPEG is read at reduced scale for all of them (never whole), and a colour image becomes a plane without a
float copy of the whole image."""

import io

import numpy as np
import pytest
from PIL import Image

from pneumo.imaging import decoding
from pneumo.prediction.analysis import PREVIEW_SIDE, heatmap_backdrop, preview
from pneumo.imaging.decoding import LUMA, DecodedFile, decode_side

LARGE = (4096, 3072)  # 12.6 megapixels; a 50-megapixel file decodes the same way, only slower


def image_bytes(size, format, mode="L") -> bytes:
    """A smooth gradient of `size` (cheap to encode, unlike noise)."""
    x = np.linspace(0, 255, size[0], dtype=np.float32)
    y = np.linspace(0, 255, size[1], dtype=np.float32)
    gray = ((x[None, :] + y[:, None]) / 2).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(gray).convert(mode).save(buffer, format=format)
    return buffer.getvalue()


@pytest.fixture
def decodes(monkeypatch):
    """The shape of every plane decoded while the test runs."""
    shapes = []
    decode = decoding._decode

    def counted(*args):
        plane = decode(*args)
        shapes.append(plane.shape)
        return plane

    monkeypatch.setattr(decoding, "_decode", counted)
    return shapes


def test_a_large_jpegs_preview_is_made_without_a_full_size_decode(decodes):
    shown = preview(image_bytes(LARGE, "JPEG"))
    assert max(shown.shape) <= PREVIEW_SIDE
    assert decodes == [(LARGE[1] // 4, LARGE[0] // 4)]  # libjpeg's 1/4 scale: the smallest still >= 448 px a side


def test_the_preview_the_backdrop_and_a_224_px_model_share_one_reduced_decode(decodes):
    decoded = DecodedFile(image_bytes(LARGE, "JPEG"))
    preview(decoded)
    heatmap_backdrop(decoded)
    decoded.for_model(224, 224)
    assert len(decodes) == 1 and max(decodes[0]) < max(LARGE)
    # A 150 px model (the row LSTM) is decoded at 1/8: another reduced decode, still not the whole image.
    decoded.for_model(150, 150)
    assert decodes[1] == (LARGE[1] // 8, LARGE[0] // 8) and min(decodes[1]) >= decode_side(150, 150)


@pytest.mark.parametrize("format", ["PNG", "TIFF", "BMP"])
def test_a_file_without_a_reduced_decode_is_decoded_once_for_everything(decodes, format):
    decoded = DecodedFile(image_bytes((1200, 1000), format))
    preview(decoded)
    heatmap_backdrop(decoded)
    decoded.for_model(224, 224)
    decoded.for_model(150, 150)
    decoded.plane()
    assert decodes == [(1000, 1200)]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "CMYK", "P"])
def test_a_colour_image_becomes_its_luma_in_bands_with_the_values_of_the_whole(mode):
    """Taller than a band of LUMA_ROWS rows, with a last band cut short."""
    rng = np.random.default_rng(0)
    rgb = (rng.random((decoding.LUMA_ROWS * 2 + 37, 300, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(rgb).convert(mode)
    whole = np.asarray(image.convert("RGB"), dtype=np.float32) @ LUMA / 255.0
    np.testing.assert_array_equal(decoding._pil_to_unit_gray(image), whole)
