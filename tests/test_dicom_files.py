"""DICOM files as they come: several frames (the first is the image, and only it is decoded), and hostile
headers, each refused as one InvalidImageError that names the file, never another exception."""

import tracemalloc

import numpy as np
import pytest

from conftest import synthetic_xray, write_dicom
from pneumo import errors
from pneumo.imaging.decoding import DecodedFile, read_grayscale

GRAY = synthetic_xray(size=128).astype(np.uint16) * 16


def rewritten(path, **elements):
    """The DICOM file at `path` with some header elements changed (None: removed), saved over itself."""
    import pydicom

    dataset = pydicom.dcmread(path)
    for keyword, value in elements.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    dataset.save_as(path)
    return path


def multi_frame_dicom(path, frames: np.ndarray):
    """A DICOM file holding `frames` (frames, rows, columns), uncompressed."""
    write_dicom(path, frames[0])
    return rewritten(path, NumberOfFrames=len(frames), PixelData=frames.astype(np.uint16).tobytes())


def distinct_frames(count: int, side: int) -> np.ndarray:
    return np.stack([synthetic_xray(size=side, seed=i).astype(np.uint16) * 16 for i in range(count)])


def test_a_multi_frame_dicom_decodes_to_its_first_frame(tmp_path):
    frames = distinct_frames(50, 128)
    decoded = read_grayscale(multi_frame_dicom(tmp_path / "cine.dcm", frames))
    assert decoded.shape == frames[0].shape
    np.testing.assert_array_equal(decoded, read_grayscale(write_dicom(tmp_path / "first.dcm", frames[0])))
    assert not np.array_equal(decoded, read_grayscale(write_dicom(tmp_path / "second.dcm", frames[1])))


def test_a_multi_frame_dicom_costs_one_frames_memory(tmp_path):
    frames = distinct_frames(100, 256)  # 12.5 MB of 16-bit frames
    data = multi_frame_dicom(tmp_path / "cine.dcm", frames).read_bytes()
    tracemalloc.start()
    try:
        DecodedFile(data).plane()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < frames.nbytes / 4  # decoding every frame would need at least frames.nbytes


def test_an_absurd_frame_count_is_refused_before_decoding(tmp_path):
    path = rewritten(write_dicom(tmp_path / "frames.dcm", GRAY), NumberOfFrames=10**9)
    with pytest.raises(errors.ImageTooLargeError, match="1,000,000,000 frames") as raised:
        read_grayscale(path)
    assert str(path) in str(raised.value)


def header_case(change):
    return lambda path: rewritten(write_dicom(path, GRAY), **change)


# Where the image's header values (window, rescale) are written: from its first element of group 0028 (Samples
# per Pixel) to the pixel data. The UIDs before it are random digits, which can hold the text looked for.
IMAGE_GROUP, PIXEL_DATA = b"\x28\x00\x02\x00US", b"\xe0\x7f\x10\x00O"


def byte_patched(old: bytes, new: bytes, **options):
    """A DICOM whose header text `old` is overwritten by `new` (values pydicom would not write itself)."""
    def make(path):
        write_dicom(path, GRAY, **options)
        data = path.read_bytes()
        start, end = data.index(IMAGE_GROUP), data.index(PIXEL_DATA)
        assert data[start:end].count(old) == 1
        path.write_bytes(data[:start] + data[start:end].replace(old, new) + data[end:])
        return path
    return make


@pytest.mark.parametrize("make, error", [
    (lambda path: write_dicom(path, GRAY, window=(500, 0)), errors.CorruptImageError),  # window width 0
    (header_case({"PixelData": None}), errors.NotAnImageError),
    (header_case({"PixelData": GRAY.tobytes()[:1000]}), errors.CorruptImageError),  # shorter than Rows*Columns*2
    (header_case({"BitsAllocated": 64}), errors.CorruptImageError),
    (header_case({"BitsAllocated": 13}), errors.CorruptImageError),
    (header_case({"BitsAllocated": 65535}), errors.CorruptImageError),
    (header_case({"BitsStored": 40}), errors.CorruptImageError),
    (header_case({"NumberOfFrames": "-3"}), errors.CorruptImageError),
    (header_case({"SamplesPerPixel": 3}), errors.CorruptImageError),  # no PlanarConfiguration, a third of the data
    (header_case({"SamplesPerPixel": 4}), errors.UnsupportedFormatError),
    (header_case({"PhotometricInterpretation": "FOO"}), errors.CorruptImageError),
    (header_case({"PixelRepresentation": 7}), errors.CorruptImageError),
    (byte_patched(b"567", b"abc", window=(567, 200)), errors.CorruptImageError),  # a window centre that is no number
    (byte_patched(b"1.25", b"x.yz", slope=1.25), errors.CorruptImageError),  # nor a rescale slope
    (byte_patched(b"1.25", b"9e99", slope=1.25), errors.CorruptImageError),  # a slope beyond float32
], ids=["window-width-0", "no-pixel-data", "short-pixel-data", "bits-allocated-64", "bits-allocated-13",
        "bits-allocated-65535", "bits-stored-40", "frames-negative", "samples-3", "samples-4", "photometric-foo",
        "pixel-representation-7", "window-centre-text", "slope-text", "slope-huge"])
def test_a_hostile_dicom_is_one_invalid_image_error_naming_the_file(tmp_path, make, error):
    path = make(tmp_path / "hostile.dcm")
    with pytest.raises(errors.InvalidImageError) as raised:
        read_grayscale(path)
    assert type(raised.value) is error, raised.value
    assert str(path) in str(raised.value)


def test_a_decoder_failure_no_decoder_names_is_reported_as_corrupt(tmp_path, monkeypatch):
    """Whatever a parser raises on a hostile file becomes CorruptImageError, its type in the message."""
    import pydicom.pixels

    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", broken)
    path = write_dicom(tmp_path / "x.dcm", GRAY)
    with pytest.raises(errors.CorruptImageError, match="IndexError: list index out of range") as raised:
        read_grayscale(path)
    assert str(path) in str(raised.value)
