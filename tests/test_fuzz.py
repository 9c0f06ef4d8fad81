"""Every decoder against hostile files: the seeded fuzzer of tests/fuzzing.py mutates real files of every
supported format and DICOM transfer syntax, and each mutated file must decode to a model input or raise
InvalidImageError (no other exception, no crash), in bounded memory. The decoder bugs it found stay fixed:
GDCM ending the process on a compressed DICOM whose header disagrees with its codestream, a float TIFF holding
values that are not numbers, and a deflated DICOM inflated without limit."""

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_xray, transcode, write_dicom
from pneumo import errors
from pneumo.imaging.decoding import DEFLATED_DICOM_SYNTAX, read_grayscale

FUZZER = Path(__file__).with_name("fuzzing.py")
FILES = 5000  # about 10 s here; benchmarks/fuzz_decoders.py runs more
PEAK_MEMORY_MB = 1024  # the whole fuzzing process; its baseline (numpy, Pillow, pydicom, pneumo) is about 300 MB


def test_every_mutated_file_decodes_or_raises_one_invalid_image_error_in_bounded_memory():
    # In a child process: a decoder that ends its process ends the child, not the test run, and the child's peak
    # memory is the fuzzing's own.
    run = subprocess.run([sys.executable, str(FUZZER), "--files", str(FILES), "--seed", "0"], check=False,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.splitlines()[-1])
    assert report["bugs"] == [], report["bugs"][:5]
    assert sum(report["outcomes"].values()) == FILES
    # The mutations reach the decoders: some files still decode, and each kind of refusal is met.
    assert report["outcomes"]["decoded"] > FILES / 20, report["outcomes"]
    for error in ("CorruptImageError", "NotAnImageError", "UnsupportedFormatError", "ImageTooLargeError",
                  "ImageTooSmallError"):
        assert report["outcomes"].get(error), (error, report["outcomes"])
    assert report["peak_rss_mb"] < PEAK_MEMORY_MB, report


GRAY12 = synthetic_xray(size=96).astype(np.uint16) * 16


def with_rows(data: bytes, rows: int) -> bytes:
    """A DICOM file's Rows (0028,0010, explicit VR little endian) set to `rows` in its own bytes."""
    at = data.find(struct.pack("<HH", 0x0028, 0x0010) + b"US\x02\x00", 132)
    assert at > 0
    return data[:at + 8] + struct.pack("<H", rows) + data[at + 10:]


def test_a_compressed_dicom_that_ends_its_decoder_is_one_corrupt_file_and_the_process_goes_on(tmp_path):
    """GDCM ends its process (std::terminate) on JPEG-LS pixel data shorter than the header's rows say. Decoded in
    a child Python, as the demo would: the file is one CorruptImageError, and the next file decodes."""
    good = transcode(write_dicom(tmp_path / "plain.dcm", GRAY12), tmp_path / "jpeg-ls.dcm", "JPEGLSLossless")
    hostile = tmp_path / "rows-200.dcm"
    hostile.write_bytes(with_rows(good.read_bytes(), 200))
    script = ("import sys; from pneumo.imaging.decoding import read_grayscale; from pneumo.errors import CorruptImageError\n"
              "try:\n    read_grayscale(sys.argv[1])\nexcept CorruptImageError as error:\n    print('refused:', error)\n"
              "print('then decoded:', read_grayscale(sys.argv[2]).shape)")
    run = subprocess.run([sys.executable, "-c", script, str(hostile), str(good)], check=False,
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])
    assert run.returncode == 0, run.stderr[-2000:]
    refused, decoded = run.stdout.splitlines()
    assert refused.startswith(f"refused: {hostile}: the image data is truncated or corrupt") and "decoder" in refused
    assert decoded == "then decoded: (96, 96)"


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_float_tiff_holding_a_value_that_is_not_a_number_is_corrupt(tmp_path, value):
    pixels = synthetic_xray(size=96).astype(np.float32)
    pixels[10, 20] = value
    path = tmp_path / "float.tiff"
    Image.fromarray(pixels).save(path)
    with pytest.raises(errors.CorruptImageError, match="not finite") as raised:
        read_grayscale(path)
    assert str(path) in str(raised.value)


def test_a_float_tiff_whose_range_is_past_float32_is_corrupt(tmp_path):
    pixels = np.full((96, 96), -3e38, np.float32)
    pixels[:48] = 3e38
    path = tmp_path / "float.tiff"
    Image.fromarray(pixels).save(path)
    with pytest.raises(errors.CorruptImageError, match="not finite"):
        read_grayscale(path)


def deflated_dicom(path, data_set: bytes) -> Path:
    """A Deflated Explicit VR Little Endian file: pydicom's file meta information, then `data_set` deflated."""
    import pydicom

    plain = write_dicom(path, GRAY12)
    dataset = pydicom.dcmread(plain)
    dataset.file_meta.TransferSyntaxUID = DEFLATED_DICOM_SYNTAX
    dataset.save_as(plain, enforce_file_format=True)
    data = plain.read_bytes()
    meta_end = 144 + struct.unpack_from("<I", data, 140)[0]  # after (0002,0000), the meta information's length
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    path.write_bytes(data[:meta_end] + deflater.compress(data_set) + deflater.flush())
    return path


def test_a_deflated_dicom_is_refused_by_its_transfer_syntax_before_it_is_inflated(tmp_path):
    """A deflated data set is inflated whole by pydicom while it reads the header; 100 MB of zeros deflate to
    about 100 kB. Refused before: the message names the syntax, and nothing is inflated."""
    import tracemalloc

    path = deflated_dicom(tmp_path / "deflated.dcm", bytes(100 * 2**20))
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(errors.UnsupportedFormatError, match=DEFLATED_DICOM_SYNTAX.replace(".", r"\.")):
            read_grayscale(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20
