"""The one image path: every format decodes to the same grayscale plane; every bad file gets a clear error."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import example_images, png_bytes, synthetic_xray
from pneumo import errors
from pneumo.imaging import load_model_input, read_grayscale

GRAY = synthetic_xray(size=128)


def saved(tmp_path, name, writer):
    path = tmp_path / name
    writer(path)
    return path


def write_dicom(path, pixels, photometric="MONOCHROME2", slope=1.0, intercept=0.0, window=None):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "CR"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.PixelData = pixels.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("name, writer", [
    ("gray8.png", lambda p: Image.fromarray(GRAY).save(p)),
    ("gray16.png", lambda p: Image.fromarray(GRAY.astype(np.uint16) * 257).save(p)),
    ("rgb.png", lambda p: Image.fromarray(np.stack([GRAY] * 3, -1)).save(p)),
    ("rgba.png", lambda p: Image.fromarray(np.dstack([GRAY] * 3 + [np.full_like(GRAY, 255)])).save(p)),
    ("image.bmp", lambda p: Image.fromarray(GRAY).save(p)),
    ("image.tiff", lambda p: Image.fromarray(GRAY).save(p)),
    ("image16.tiff", lambda p: Image.fromarray(GRAY.astype(np.uint16) * 257).save(p)),
])
def test_lossless_formats_decode_to_the_same_plane(tmp_path, name, writer):
    decoded = read_grayscale(saved(tmp_path, name, writer))
    assert decoded.dtype == np.float32 and decoded.shape == GRAY.shape
    np.testing.assert_allclose(decoded, GRAY / 255.0, atol=1 / 255)


def test_jpeg_decodes_close_to_the_original(tmp_path):
    decoded = read_grayscale(saved(tmp_path, "x.jpg", lambda p: Image.fromarray(GRAY).save(p, quality=95)))
    assert np.abs(decoded - GRAY / 255.0).mean() < 0.02


def test_dicom_monochrome2_applies_rescale(tmp_path):
    pixels = GRAY.astype(np.uint16) * 16
    decoded = read_grayscale(write_dicom(tmp_path / "x.dcm", pixels, slope=2.0, intercept=-100.0))
    np.testing.assert_allclose(decoded, (GRAY - GRAY.min()) / (GRAY.max() - GRAY.min()), atol=1e-3)


def test_dicom_monochrome1_is_inverted(tmp_path):
    plain = read_grayscale(write_dicom(tmp_path / "a.dcm", GRAY.astype(np.uint16)))
    inverted = read_grayscale(write_dicom(tmp_path / "b.dcm", GRAY.astype(np.uint16), photometric="MONOCHROME1"))
    np.testing.assert_allclose(inverted, 1.0 - plain, atol=1e-6)


def test_dicom_voi_window_saturates_outside_the_window(tmp_path):
    pixels = np.tile(np.arange(0, 1000, 1000 / 128), (128, 1)).astype(np.uint16)
    decoded = read_grayscale(write_dicom(tmp_path / "w.dcm", pixels, window=(500, 200)))
    assert decoded[:, pixels[0] < 390].max() == pytest.approx(0.0, abs=1e-6)
    assert decoded[:, pixels[0] > 610].min() == pytest.approx(1.0, abs=1e-6)
    assert 0.3 < decoded[0, np.argmin(abs(pixels[0] - 500.0))] < 0.7


def test_model_input_has_the_models_shape_and_range():
    image = load_model_input(example_images()[0], 160, 160)
    assert image.shape == (160, 160, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert np.array_equal(image[..., 0], image[..., 2])


def test_bytes_and_path_give_the_same_tensor():
    path = example_images()[0]
    assert np.array_equal(load_model_input(path, 64, 64), load_model_input(path.read_bytes(), 64, 64))


def bomb_png(width=100_000, height=100_000) -> bytes:
    """A valid PNG header that claims 10 gigapixels: decoding it would exhaust memory."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    return example_images()[0].read_bytes()[:2000]


def gif_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(GRAY).save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.mark.parametrize("content, error, words", [
    (b"", errors.EmptyFileError, "empty"),
    (b"%PDF-1.4 this is a report, not an X-ray", errors.NotAnImageError, "not an image"),
    (truncated_jpeg(), errors.CorruptImageError, "truncated or corrupt"),
    (png_bytes(np.zeros((1, 1), np.uint8)), errors.ImageTooSmallError, "too small"),
    (png_bytes(np.zeros((20, 300), np.uint8)), errors.ImageTooSmallError, "20 pixels"),
    (bomb_png(), errors.ImageTooLargeError, "too large"),
    (gif_bytes(), errors.UnsupportedFormatError, "GIF"),
    (b"\0" * 128 + b"DICM" + b"\xff" * 50, errors.NotAnImageError, "DICOM file without pixel data"),
])
def test_bad_files_raise_one_family_with_the_file_name(tmp_path, content, error, words):
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    with pytest.raises(error) as raised:
        read_grayscale(path)
    assert isinstance(raised.value, errors.PneumoError)
    assert str(path) in str(raised.value) and words in str(raised.value)


def test_truncated_dicom_is_corrupt(tmp_path):
    path = write_dicom(tmp_path / "x.dcm", GRAY.astype(np.uint16))
    path.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises(errors.CorruptImageError, match="x.dcm"):
        read_grayscale(path)


def test_missing_file_is_a_pneumo_error(tmp_path):
    with pytest.raises(errors.InvalidImageError, match="no such file"):
        read_grayscale(tmp_path / "absent.png")
