"""A seeded fuzzer of every decoder pneumo reads.

Real files of each supported format, made from one of the example X-rays (JPEG baseline, progressive, CMYK and
EXIF-rotated; PNG 8- and 16-bit, palette, RGB and RGBA; BMP; TIFF raw, LZW, deflate, 16-bit and float; DICOM in
every transfer syntax pneumo decodes or refuses), are mutated by a seeded mutator: truncation, bit flips, byte
runs, spliced blocks, and header edits that know the format (absurd sizes, frame counts, bit depths, sample
counts, chunk lengths, with the PNG checksums redone so that the edit reaches the decoder). Each mutated file
goes through the one image path (`pneumo.imaging.decoding.load_model_input`). Its outcome is "decoded" (a finite model
input in [0, 1]), the name of the InvalidImageError it raised, or a bug: any other exception, or a model input
that is not one.

    python tests/fuzzing.py --files 3000 --seed 0       # one JSON line: counts by outcome, bugs, peak RSS

tests/test_fuzz.py runs it in a child process (so that its peak memory is its own); benchmarks/fuzz_decoders.py
runs more files.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import struct
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from conftest import EXAMPLES, transcode, write_dicom  # noqa: E402
from pneumo.errors import InvalidImageError  # noqa: E402
from pneumo.imaging.decoding import load_model_input  # noqa: E402

MODEL_SIDE = 64  # the model input every file is decoded for (a JPEG is decoded at no less than twice that)
# Values a header edit writes: the edges of each field's range, and sizes just under and over pneumo's limits.
ABSURD_NUMBERS = (0, 1, 2, 3, 7, 8, 12, 13, 15, 16, 17, 24, 31, 32, 33, 63, 64, 255, 256, 4095, 7000, 7072, 32767,
                  32768, 65535, 65536, 100_000, 2**31 - 1, 2**31, 2**32 - 1)


# The seeds: one real X-ray in every format.

def xray(width: int = 96, height: int = 80) -> np.ndarray:
    """An example X-ray at a small size (not square, so that a swapped width and height show)."""
    image = Image.open(min(EXAMPLES.glob("*.jpeg"))).convert("L")
    return np.asarray(image.resize((width, height), Image.BICUBIC))


def pil_bytes(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def exif_rotated(gray: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return pil_bytes(Image.fromarray(np.rot90(gray)), "JPEG", quality=90, exif=exif.tobytes())


def dicom_bytes(folder: Path, name: str, pixels: np.ndarray, syntax: str | None = None, **elements) -> bytes:
    """A DICOM file of `pixels` with some header elements changed, in another transfer syntax when `syntax` names
    one (pydicom's name for an uncompressed one, GDCM's for a compressed one)."""
    import pydicom
    import pydicom.uid

    path = write_dicom(folder / f"{name}.dcm", pixels)
    rewritten_here = ("ImplicitVRLittleEndian", "DeflatedExplicitVRLittleEndian")
    if elements or syntax in rewritten_here:
        dataset = pydicom.dcmread(path)
        for keyword, value in elements.items():
            setattr(dataset, keyword, value)
        if syntax in rewritten_here:
            dataset.file_meta.TransferSyntaxUID = getattr(pydicom.uid, syntax)
            syntax = None
        dataset.save_as(path, enforce_file_format=True)
    if syntax:
        path = transcode(path, folder / f"{name}-{syntax}.dcm", syntax)
    return path.read_bytes()


def seed_files(folder: Path) -> dict[str, bytes]:
    """Every format pneumo reads, as real files of the same X-ray; DICOMs are written into `folder`."""
    gray = xray()
    rgb = np.stack([gray, gray // 2 + 60, 255 - gray], axis=-1)
    twelve_bit = gray.astype(np.uint16) * 16
    seeds = {
        "jpeg-gray": pil_bytes(Image.fromarray(gray), "JPEG", quality=90),
        "jpeg-rgb": pil_bytes(Image.fromarray(rgb), "JPEG", quality=90),
        "jpeg-progressive": pil_bytes(Image.fromarray(gray), "JPEG", quality=90, progressive=True),
        "jpeg-cmyk": pil_bytes(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=90),
        "jpeg-exif-rotated": exif_rotated(gray),
        "png-gray": pil_bytes(Image.fromarray(gray), "PNG"),
        "png-gray16": pil_bytes(Image.fromarray(twelve_bit), "PNG"),
        "png-palette": pil_bytes(Image.fromarray(rgb).convert("P"), "PNG"),
        "png-rgb": pil_bytes(Image.fromarray(rgb), "PNG"),
        "png-rgba": pil_bytes(Image.fromarray(np.dstack([rgb, gray])), "PNG"),
        "png-gray-alpha": pil_bytes(Image.fromarray(gray).convert("LA"), "PNG"),
        "bmp-gray": pil_bytes(Image.fromarray(gray), "BMP"),
        "bmp-rgb": pil_bytes(Image.fromarray(rgb), "BMP"),
        "tiff-gray": pil_bytes(Image.fromarray(gray), "TIFF"),
        "tiff-lzw": pil_bytes(Image.fromarray(gray), "TIFF", compression="tiff_lzw"),
        "tiff-deflate-rgb": pil_bytes(Image.fromarray(rgb), "TIFF", compression="tiff_adobe_deflate"),
        "tiff-gray16": pil_bytes(Image.fromarray(twelve_bit), "TIFF"),
        "tiff-float": pil_bytes(Image.fromarray(gray.astype(np.float32) / 255), "TIFF"),
        "dicom-explicit-le": dicom_bytes(folder, "explicit", twelve_bit),
        "dicom-monochrome1-windowed": dicom_bytes(folder, "windowed", twelve_bit, PhotometricInterpretation="MONOCHROME1",
                                                  RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=1000,
                                                  WindowWidth=4000),
        "dicom-signed": dicom_bytes(folder, "signed", twelve_bit, PixelRepresentation=1),
        "dicom-multi-frame": dicom_bytes(folder, "frames", twelve_bit, NumberOfFrames=3,
                                         PixelData=np.tile(twelve_bit, (3, 1)).tobytes()),
        "dicom-rgb": dicom_bytes(folder, "rgb", twelve_bit, SamplesPerPixel=3, PhotometricInterpretation="RGB",
                                 PlanarConfiguration=0, BitsAllocated=8, BitsStored=8, HighBit=7,
                                 PixelData=rgb.tobytes()),
        "dicom-8-bit": dicom_bytes(folder, "eight", twelve_bit, BitsAllocated=8, BitsStored=8, HighBit=7,
                                   PixelData=gray.tobytes()),
    }
    for syntax in ("ImplicitVRLittleEndian", "DeflatedExplicitVRLittleEndian", "ExplicitVRBigEndian",
                   "JPEGLosslessProcess14_1", "JPEGLSLossless", "JPEG2000Lossless", "JPEG2000", "RLELossless",
                   "JPEGExtendedProcess2_4"):
        seeds[f"dicom-{syntax}"] = dicom_bytes(folder, syntax, twelve_bit, syntax)
    seeds["dicom-JPEGBaselineProcess1"] = dicom_bytes(
        folder, "baseline", twelve_bit, "JPEGBaselineProcess1", BitsAllocated=8, BitsStored=8, HighBit=7,
        PixelData=gray.tobytes())
    return seeds


# The mutator: each mutation takes the file and a seeded random generator and returns the new bytes, or None when
# it does not apply to this file (the mutator then draws another).

def truncated(data: bytes, rng: random.Random) -> bytes:
    """Cut anywhere, most often inside the header."""
    return data[:rng.choice([rng.randrange(len(data)), rng.randrange(min(len(data), 512))])]


def bits_flipped(data: bytes, rng: random.Random) -> bytes:
    """Flip 1 to 16 bits, half the time within the first 512 bytes (where the headers are)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 16)):
        position = rng.randrange(min(len(out), 512) if rng.random() < 0.5 else len(out))
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out)


def run_overwritten(data: bytes, rng: random.Random) -> bytes:
    """Overwrite 1 to 64 bytes with zeros, 0xFF or noise."""
    length = rng.randint(1, 64)
    start = rng.randrange(len(data))
    fill = rng.choice([b"\x00" * length, b"\xff" * length, rng.randbytes(length)])
    return data[:start] + fill + data[start + length:]


def spliced(data: bytes, rng: random.Random) -> bytes:
    """Delete, duplicate or insert a block."""
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.randint(1, 4096))
    return rng.choice([data[:start] + data[end:], data[:end] + data[start:end] + data[end:],
                       data[:start] + rng.randbytes(end - start) + data[start:]])


def absurd_number(rng: random.Random, bits: int) -> int:
    return rng.choice([n for n in ABSURD_NUMBERS if n < 2**bits] + [rng.randrange(2**bits)])


def packed(data: bytes, offset: int, form: str, value: int) -> bytes:
    size = struct.calcsize(form)
    value %= 2 ** (8 * size)
    if form[-1].islower():  # a signed field
        value -= 2 ** (8 * size) if value >= 2 ** (8 * size - 1) else 0
    return data[:offset] + struct.pack(form, value) + data[offset + size:]


def png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset of the chunk's length field, kind, length) for every whole chunk."""
    chunks, offset = [], 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        chunks.append((offset, kind, length))
        offset += 12 + length
    return chunks


def png_checksums_redone(data: bytes) -> bytes:
    """Every whole chunk's CRC recomputed, so that an edit gets past the checksum to the decoder."""
    out = bytearray(data)
    for offset, kind, length in png_chunks(data):
        end = offset + 8 + length
        if end + 4 <= len(out):
            out[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(out[offset + 4:end])))
    return bytes(out)


def png_header_edited(data: bytes, rng: random.Random) -> bytes | None:
    """An absurd width, height, bit depth, colour type or interlace method in IHDR, a chunk length past the
    file, or a chunk's bits flipped, with the checksums redone."""
    if not data.startswith(b"\x89PNG"):
        return None
    chunks = png_chunks(data)
    choice = rng.randrange(4)
    if choice == 0:  # IHDR: width, height (4 bytes each), then bit depth, colour type, compression, filter, interlace
        field, form = rng.choice([(0, ">I"), (4, ">I"), (8, ">B"), (9, ">B"), (10, ">B"), (11, ">B"), (12, ">B")])
        edited = packed(data, 16 + field, form, absurd_number(rng, 8 * struct.calcsize(form)))
    elif choice == 1 and chunks:
        offset, _, _ = rng.choice(chunks)
        edited = packed(data, offset, ">I", absurd_number(rng, 32))
    else:
        edited = bits_flipped(data, rng)
    return png_checksums_redone(edited)


JPEG_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(offset of the marker, marker, length) of every segment up to the start of the scan."""
    segments, offset = [], 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker, length = data[offset + 1], struct.unpack(">H", data[offset + 2:offset + 4])[0]
        segments.append((offset, marker, length))
        if marker == 0xDA:
            break
        offset += 2 + length
    return segments


def jpeg_header_edited(data: bytes, rng: random.Random) -> bytes | None:
    """An absurd precision (bit depth), height, width, component count or sampling factor in the frame header,
    a segment length past the file, another frame type, or an absurd EXIF orientation."""
    if not data.startswith(b"\xff\xd8"):
        return None
    segments = jpeg_segments(data)
    frames = [s for s in segments if s[1] in JPEG_SOF_MARKERS]
    choice = rng.randrange(5)
    if choice <= 1 and frames:  # precision (1 byte), height, width (2 each), components (1), then 3 per component
        offset = frames[0][0] + 4
        field, form = rng.choice([(0, ">B"), (1, ">H"), (3, ">H"), (5, ">B"), (7, ">B"), (10, ">B")])
        return packed(data, offset + field, form, absurd_number(rng, 8 * struct.calcsize(form)))
    if choice == 2 and segments:
        offset, _, _ = rng.choice(segments)
        return packed(data, offset + 2, ">H", absurd_number(rng, 16))
    if choice == 3 and frames:
        return packed(data, frames[0][0] + 1, ">B", rng.choice(sorted(JPEG_SOF_MARKERS)))
    orientation = data.find(b"\x12\x01\x03\x00\x01\x00\x00\x00")  # the EXIF orientation tag, little-endian
    if orientation < 0:
        return None
    return packed(data, orientation + 8, "<H", absurd_number(rng, 16))


def bmp_header_edited(data: bytes, rng: random.Random) -> bytes | None:
    """An absurd pixel offset, width, height (negative too), planes, bit depth, compression or palette size."""
    if not data.startswith(b"BM"):
        return None
    offset, form = rng.choice([(10, "<I"), (14, "<I"), (18, "<i"), (22, "<i"), (26, "<H"), (28, "<H"), (30, "<I"),
                               (34, "<I"), (46, "<I")])
    return packed(data, offset, form, absurd_number(rng, 8 * struct.calcsize(form)) * rng.choice([1, 1, -1]))


TIFF_TAGS = (256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 339)  # sizes, depth, compression, strips...


def tiff_header_edited(data: bytes, rng: random.Random) -> bytes | None:
    """An absurd value, type or count in one of the first IFD's image-structure entries."""
    if not data.startswith(b"II*\x00") or len(data) < 8:
        return None
    ifd = struct.unpack("<I", data[4:8])[0]
    if ifd + 2 > len(data):
        return None
    entries = [ifd + 2 + 12 * i for i in range(struct.unpack("<H", data[ifd:ifd + 2])[0])
               if ifd + 14 + 12 * i <= len(data)]
    entries = [e for e in entries if struct.unpack("<H", data[e:e + 2])[0] in TIFF_TAGS] or entries
    if not entries:
        return None
    entry = rng.choice(entries)
    field, form = rng.choice([(2, "<H"), (4, "<I"), (8, "<H"), (8, "<I")])  # type, count, value (short or long)
    return packed(data, entry + field, form, absurd_number(rng, 8 * struct.calcsize(form)))


# DICOM image-structure elements: (group, element), their VR, and the values an edit writes.
DICOM_US = {(0x0028, 0x0010): "Rows", (0x0028, 0x0011): "Columns", (0x0028, 0x0100): "BitsAllocated",
            (0x0028, 0x0101): "BitsStored", (0x0028, 0x0102): "HighBit", (0x0028, 0x0103): "PixelRepresentation",
            (0x0028, 0x0002): "SamplesPerPixel", (0x0028, 0x0006): "PlanarConfiguration"}
DICOM_TEXT = {"NumberOfFrames": ["0", "-1", "2", "3", "4", "65536", "1000000000", "1e9", "abc", "1.5", " "],
              "PhotometricInterpretation": ["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL_422",
                                            "YBR_FULL", "FOO", ""],
              "RescaleSlope": ["0", "-1", "1e38", "1e39", "nan", "inf", "abc"],
              "RescaleIntercept": ["-1e38", "nan", "1e300"],
              "WindowCenter": ["0", "-1e38", "nan", "1\\2\\3"], "WindowWidth": ["0", "-1", "1e-30", "nan", "1e38"]}


def dicom_header_edited(data: bytes, rng: random.Random) -> bytes | None:
    """An absurd rows, columns, bit depth, high bit, signedness, sample count or planar configuration, written
    into the file's own bytes in whichever byte order and VR encoding it uses; or, in an uncompressed-syntax
    file, a frame count, photometric interpretation, rescale or window set through pydicom."""
    if data[128:132] != b"DICM":
        return None
    if rng.random() < 0.7:
        (group, element), _ = rng.choice(list(DICOM_US.items()))
        places = []
        for order in ("<", ">"):
            tag = struct.pack(f"{order}HH", group, element)
            for header in (b"US" + struct.pack(f"{order}H", 2), struct.pack(f"{order}I", 2)):
                at = data.find(tag + header, 132)
                if at >= 0:
                    places.append((at + 4 + len(header), order))
        if not places:
            return None
        at, order = rng.choice(places)
        return packed(data, at, f"{order}H", absurd_number(rng, 16))
    import pydicom

    keyword = rng.choice(list(DICOM_TEXT))
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        setattr(dataset, keyword, rng.choice(DICOM_TEXT[keyword]))
        buffer = io.BytesIO()
        dataset.save_as(buffer)
    except Exception:  # noqa: BLE001  (a value pydicom will not write in this syntax: another mutation is drawn)
        return None
    return buffer.getvalue()


STRUCTURE_EDITS = (png_header_edited, jpeg_header_edited, bmp_header_edited, tiff_header_edited, dicom_header_edited)
BLIND_EDITS = (truncated, bits_flipped, run_overwritten, spliced)


def mutated(data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    """`data` after one to three mutations, half of them header edits, and their names."""
    names = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        for _attempt in range(10):
            mutation = rng.choice(STRUCTURE_EDITS if rng.random() < 0.5 else BLIND_EDITS)
            result = mutation(data, rng) if data else None
            if result is not None:
                data = result
                names.append(mutation.__name__)
                break
    return data, names


# Running it.

def outcome(data: bytes) -> str:
    """"decoded", the name of the InvalidImageError raised, or (a bug) what went wrong otherwise."""
    try:
        tensor = load_model_input(data, MODEL_SIDE, MODEL_SIDE)
    except InvalidImageError as error:
        return type(error).__name__
    except Exception as error:  # noqa: BLE001  (what the fuzzer looks for)
        return f"BUG {type(error).__name__}: {str(error)[:200]}"
    if tensor.shape != (MODEL_SIDE, MODEL_SIDE, 3) or tensor.dtype != np.float32:
        return f"BUG model input of shape {tensor.shape}, {tensor.dtype}"
    if not np.isfinite(tensor).all() or tensor.min() < 0 or tensor.max() > 1:
        return "BUG model input not finite or outside [0, 1]"
    return "decoded"


def fuzz(files: int, seed: int, folder: Path) -> dict:
    """Mutate `files` files (the seeds taken in turn) and report the counts by outcome, overall and by format
    (jpeg, png, bmp, tiff, dicom), the bugs (each with what reproduces it: the seed file's name, the case number
    for `case` and the mutations), the slowest case, and this process's peak RSS (the DICOM decoder's worker
    process is capped by pneumo.imaging.dicom_worker.WORKER_ADDRESS_SPACE_BYTES)."""
    seeds = seed_files(folder)
    names = list(seeds)
    counts, by_format, bugs, slowest = Counter(), {}, [], (0.0, "")
    start = time.perf_counter()
    for index in range(files):
        name = names[index % len(names)]
        data, mutations = mutated(seeds[name], random.Random(f"{seed}-{index}"))
        began = time.perf_counter()
        result = outcome(data)
        slowest = max(slowest, (time.perf_counter() - began, f"{name} case {index}"))
        kind = result.split(":")[0] if result.startswith("BUG") else result
        counts[kind] += 1
        by_format.setdefault(name.split("-")[0], Counter())[kind] += 1
        if result.startswith("BUG"):
            bugs.append({"seed": name, "case": index, "mutations": mutations, "outcome": result})
    return {"files": files, "seconds": round(time.perf_counter() - start, 1), "outcomes": dict(counts.most_common()),
            "by_format": {name: dict(counter.most_common()) for name, counter in by_format.items()},
            "bugs": bugs, "slowest_case": {"seconds": round(slowest[0], 3), "case": slowest[1]},
            "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> int:
    """This process's peak resident memory since its program started: Linux's VmHWM (ru_maxrss also counts the
    memory of the parent it was forked from, when that was larger), else ru_maxrss."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def case(name: str, seed: int, index: int, folder: Path) -> bytes:
    """The mutated file of one case of `fuzz` (to reproduce a bug)."""
    data, _ = mutated(seed_files(folder)[name], random.Random(f"{seed}-{index}"))
    return data


def main(argv=None) -> int:
    import tempfile
    import warnings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # pydicom and Pillow warn about what they repair; outcomes are what counts
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(fuzz(args.files, args.seed, Path(folder))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
