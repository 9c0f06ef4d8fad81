"""Compressed DICOM, as PACS exports CR/DX images: each transfer syntax decodes (through python-gdcm, the
pixel-data handler pydicom finds) to the same image as the uncompressed file, and every bundled model
gives the same probability within 0.02.

The files are made here from one real X-ray (the encodings test's), transcoded by GDCM itself. Not
covered: 12-bit JPEG Extended (1.2.840.10008.1.2.4.51), which pydicom decodes only through the GPL
pylibjpeg-libjpeg; such a file gets a one-line "unsupported" error naming its transfer syntax (tested).
"""

import numpy as np
import pytest

from conftest import BUNDLED_MODELS, transcode
from pneumo.imaging.decoding import read_grayscale
from test_encodings import dicom, gray8

# name -> (GDCM transfer syntax, lossless)
SYNTAXES = {
    "jpeg_lossless_sv1": ("JPEGLosslessProcess14_1", True),   # 1.2.840.10008.1.2.4.70, the commonest in PACS
    "jpeg_ls_lossless": ("JPEGLSLossless", True),             # 1.2.840.10008.1.2.4.80
    "jpeg2000_lossless": ("JPEG2000Lossless", True),          # 1.2.840.10008.1.2.4.90
    "rle_lossless": ("RLELossless", True),                    # 1.2.840.10008.1.2.5
    "jpeg2000_lossy": ("JPEG2000", False),                    # 1.2.840.10008.1.2.4.91
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compressed-dicom")
    uncompressed = dicom(folder / "uncompressed.dcm", gray8())
    return uncompressed, {name: transcode(uncompressed, folder / f"{name}.dcm", syntax)
                          for name, (syntax, _) in SYNTAXES.items()}


@pytest.mark.parametrize("name", SYNTAXES)
def test_each_transfer_syntax_decodes_to_the_uncompressed_image(files, name):
    import pydicom

    uncompressed, compressed = files
    expected_uid = {"jpeg_lossless_sv1": "1.2.840.10008.1.2.4.70", "jpeg_ls_lossless": "1.2.840.10008.1.2.4.80",
                    "jpeg2000_lossless": "1.2.840.10008.1.2.4.90", "rle_lossless": "1.2.840.10008.1.2.5",
                    "jpeg2000_lossy": "1.2.840.10008.1.2.4.91"}
    assert pydicom.dcmread(compressed[name]).file_meta.TransferSyntaxUID == expected_uid[name]
    reference, decoded = read_grayscale(uncompressed), read_grayscale(compressed[name])
    if SYNTAXES[name][1]:
        assert np.array_equal(decoded, reference)
    else:
        assert np.abs(decoded - reference).mean() < 0.01


def test_twelve_bit_jpeg_extended_is_one_clear_error(files, tmp_path):
    from pneumo.errors import UnsupportedFormatError

    path = transcode(files[0], tmp_path / "jpeg_extended_12_bit.dcm", "JPEGExtendedProcess2_4")
    with pytest.raises(UnsupportedFormatError, match="1.2.840.10008.1.2.4.51"):
        read_grayscale(path)


@pytest.mark.parametrize("name", ["jpeg_lossless_sv1", "jpeg_ls_lossless"])
def test_damaged_compressed_pixel_data_is_called_corrupt_not_unsupported(files, tmp_path, name):
    """The syntax is one pneumo decodes; the codestream's middle is overwritten, so the decoder fails on the data."""
    from pneumo.errors import CorruptImageError

    data = bytearray(files[1][name].read_bytes())
    middle = len(data) - 3000
    data[middle:middle + 256] = bytes(range(256))
    with pytest.raises(CorruptImageError, match="compressed pixel data cannot be decoded"):
        read_grayscale(bytes(data), "damaged.dcm")


@pytest.fixture(scope="module", params=BUNDLED_MODELS, ids=lambda p: p.name)
def predictor(request, bundled_predictors):
    return bundled_predictors[request.param.name]


def test_every_bundled_model_gives_the_uncompressed_files_probability(files, predictor):
    uncompressed, compressed = files
    reference = predictor.predict_file(uncompressed).positive_probability
    probabilities = {name: predictor.predict_file(path).positive_probability for name, path in compressed.items()}
    assert all(abs(p - reference) <= 0.02 for p in probabilities.values()), (reference, probabilities)


def test_threads_decoding_compressed_files_at_once_get_what_one_decode_gives(files):
    """Compressed pixel data is decoded in one worker process (pneumo.imaging.dicom_worker), one file at a time."""
    from concurrent.futures import ThreadPoolExecutor

    _, compressed = files
    paths = [compressed[name] for name in SYNTAXES] * 3
    with ThreadPoolExecutor(8) as pool:
        decoded = list(pool.map(read_grayscale, paths))
    for path, plane in zip(paths, decoded):
        np.testing.assert_array_equal(plane, read_grayscale(path))
