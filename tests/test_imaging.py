"""The one image path: every format decodes to the same grayscale plane; every bad file gets a clear error."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import bomb_png, example_images, gif_bytes, png_bytes, synthetic_xray, truncated_jpeg, write_dicom
from pneumo import errors
from pneumo.imaging.decoding import load_model_input, read_grayscale

GRAY = synthetic_xray(size=128)


def saved(tmp_path, name, writer):
    path = tmp_path / name
    writer(path)
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


@pytest.mark.parametrize("content, error, words", [
    (b"", errors.EmptyFileError, "empty"),
    (b"%PDF-1.4 this is a report, not an X-ray", errors.NotAnImageError, "not an image"),
    (truncated_jpeg(), errors.CorruptImageError, "truncated or corrupt"),
    (png_bytes(np.zeros((1, 1), np.uint8)), errors.ImageTooSmallError, "too small"),
    (png_bytes(np.zeros((20, 300), np.uint8)), errors.ImageTooSmallError, "20 pixels"),
    (bomb_png(), errors.ImageTooLargeError, "too large"),
    (gif_bytes(GRAY), errors.UnsupportedFormatError, "GIF"),
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


def test_pillows_decompression_bomb_guard_stays_on_for_the_whole_process():
    import subprocess
    import sys

    script = ("from PIL import Image; before = Image.MAX_IMAGE_PIXELS; import pneumo.imaging.decoding, pneumo.demo.panels; "
              "print(before, Image.MAX_IMAGE_PIXELS)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    before, after = result.stdout.split()
    assert after == before != "None"


def twelve_bit_png(path, gray8):
    """The same picture as 12-bit data in a 16-bit PNG, the way many PACS exports write it."""
    Image.fromarray((gray8.astype(np.uint32) * 4095 // 255).astype(np.uint16)).save(path)
    return path


@pytest.mark.parametrize("method", ["percentile_window", "equalize"])
def test_a_12_bit_png_comes_out_like_its_8_bit_copy(tmp_path, method):
    from pneumo.imaging.decoding import Preprocessing

    preprocessing = Preprocessing({"method": method})
    gray8 = np.asarray(Image.open(example_images()[0]).convert("L"))
    Image.fromarray(gray8).save(tmp_path / "gray8.png")
    eight = load_model_input(tmp_path / "gray8.png", 128, 128, preprocessing)
    twelve = load_model_input(twelve_bit_png(tmp_path / "gray12.png", gray8), 128, 128, preprocessing)
    assert np.abs(eight - twelve).max() < 0.01


def test_the_decoder_scale_keeps_what_models_before_it_were_trained_on(tmp_path):
    """A config without an intensity block (pneumo 0.1) means the decoder's own scaling."""
    from pneumo.imaging.decoding import DECODER_SCALE, Preprocessing

    legacy = Preprocessing.from_config({"decode": "prose", "resize": "OpenCV INTER_AREA", "scale": [0, 1]})
    assert legacy == DECODER_SCALE
    gray8 = np.asarray(Image.open(example_images()[0]).convert("L"))
    twelve = read_grayscale(twelve_bit_png(tmp_path / "gray12.png", gray8))
    assert twelve.max() < 0.07  # 12-bit data in a 16-bit range: dark, as those models always saw it
    assert Preprocessing.from_config(legacy.to_config()) == legacy


def test_equalisation_ignores_gain_gamma_and_black_level():
    from pneumo.imaging.decoding import equalize

    gray = read_grayscale(example_images()[0])
    changed = np.clip(0.8 * gray ** 1.4 + 0.1, 0, 1)
    assert np.abs(equalize(gray) - equalize(changed)).mean() < 0.01


def test_an_unknown_normalisation_is_refused():
    from pneumo.imaging.decoding import Preprocessing

    with pytest.raises(ValueError, match="sharpen_everything"):
        Preprocessing({"method": "sharpen_everything"})


def test_smoothing_is_part_of_the_preprocessing_block_only_where_a_model_uses_it():
    from pneumo.imaging.decoding import Preprocessing

    plain, smoothed = Preprocessing({"method": "equalize"}), Preprocessing({"method": "equalize"}, smoothing=1.0)
    assert "smoothing" not in plain.to_config()  # folders exported before it read and write as they did
    assert smoothed.to_config()["smoothing"] == {"method": "gaussian", "sigma": 1.0}
    assert Preprocessing.from_config(smoothed.to_config()) == smoothed
    assert Preprocessing.from_config(plain.to_config()) == plain
    with pytest.raises(ValueError, match="smoothing sigma"):
        Preprocessing({"method": "equalize"}, smoothing=-1.0)
    with pytest.raises(ValueError, match="unknown smoothing"):  # never read as no smoothing at all
        Preprocessing.from_config({**plain.to_config(), "smoothing": {"method": "median", "size": 3}})


def test_smoothing_brings_two_files_of_one_xray_closer():
    """A 2048 px upscale (JPEG) against the X-ray itself (PNG): what differs is fine detail, which smoothing takes
    away."""
    import io

    from pneumo.imaging.decoding import Preprocessing

    gray = np.asarray(Image.open(example_images()[0]).convert("L"))
    files = []
    upscaled = Image.fromarray(gray).resize((2048, 2048), Image.BICUBIC)
    for image, fmt in ((Image.fromarray(gray), "PNG"), (upscaled, "JPEG")):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, quality=95)
        files.append(buffer.getvalue())

    def gap(smoothing):
        preprocessing = Preprocessing({"method": "equalize"}, smoothing=smoothing)
        own, upscaled = (load_model_input(data, 224, 224, preprocessing) for data in files)
        return float(np.abs(own - upscaled).mean())

    assert gap(1.0) < 0.5 * gap(0.0)  # 0.32 of it on this X-ray
    smoothed = load_model_input(files[0], 224, 224, Preprocessing({"method": "equalize"}, smoothing=1.0))
    assert smoothed.shape == (224, 224, 3) and 0.0 <= smoothed.min() and smoothed.max() <= 1.0
