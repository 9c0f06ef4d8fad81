"""Shared fixtures: the real example X-rays, image files written in every format, and a tiny trained model."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the suite never reaches the real Hub

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo.bundled import BUNDLED_MODELS as BUNDLED_BY_NAME

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
# The folders that ship with pneumo (pneumo.bundled lists them once).
BUNDLED_MODELS = [folder for _, folder in BUNDLED_BY_NAME.values()]


def example_images():
    return sorted(EXAMPLES.glob("*.jpeg"))


def true_label(path: Path) -> str:
    return path.name.split("_")[0].upper()


def synthetic_xray(size=96, seed=0, opacity=False) -> np.ndarray:
    """A uint8 grayscale 'chest': two bright lung fields on dark, optionally with a bright opacity."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = 40 + 20 * rng.random((size, size))
    for center in (0.3, 0.7):
        image += 120 * (((xx - center) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1)
    if opacity:
        image += 80 * (((xx - 0.3) / 0.1) ** 2 + ((yy - 0.6) / 0.1) ** 2 < 1)
    return np.clip(image, 0, 255).astype(np.uint8)


def png_bytes(array: np.ndarray, mode=None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def write_synthetic_class_folders(split_folder, count, folder_names=("NORMAL", "PNEUMONIA"), seed=0):
    """`count` synthetic PNGs in each class folder, two images per 'patient' (person<N>_...)."""
    for label, opacity in zip(folder_names, (False, True)):
        folder = split_folder / label
        folder.mkdir(parents=True)
        for i in range(count):
            kind = "bacteria" if opacity else "normal"
            name = f"person{i // 2 + (100 if opacity else 0)}_{kind}_{i}.png"
            Image.fromarray(synthetic_xray(seed=seed + i + (1000 if opacity else 0), opacity=opacity)).save(folder / name)


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


def bomb_png(width=100_000, height=100_000) -> bytes:
    """A valid PNG header that claims 10 gigapixels: decoding it would exhaust memory."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    return example_images()[0].read_bytes()[:2000]


def gif_bytes(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """train/NORMAL and train/PNEUMONIA with 24 synthetic images each, several per 'patient'."""
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_class_folders(root / "train", 24)
    return root


@pytest.fixture(scope="session")
def tiny_model_folder(synthetic_dataset, tmp_path_factory):
    """A cnn_lstm trained for 2 epochs at 64x64 on the synthetic set, exported like a bundled model."""
    from pneumo.train import main

    out = tmp_path_factory.mktemp("models") / "tiny-cnn-lstm"
    main(["--arch", "cnn_lstm", "--data", str(synthetic_dataset), "--out", str(out), "--epochs", "2",
          "--input-size", "64", "--batch-size", "8", "--validation-fraction", "0.25"])
    return out


TINY_ROW_LSTM_SIDE = 24


@pytest.fixture(scope="session")
def row_lstm_folder(synthetic_dataset, tmp_path_factory):
    """A row_lstm trained for 1 epoch at 24x24 on the synthetic set, exported like a released model (one batch
    holds the whole training split: the LSTMs' training step, slow to trace, is traced once). It shares the
    tiny CNN+LSTM's data split, so the two make an ensemble."""
    from pneumo.train import main

    out = tmp_path_factory.mktemp("models") / "tiny-row-lstm"
    assert main(["--arch", "row_lstm", "--data", str(synthetic_dataset), "--out", str(out), "--epochs", "1",
                 "--input-size", str(TINY_ROW_LSTM_SIDE), "--batch-size", "64", "--validation-fraction", "0.25"]) == 0
    return out


def legacy_copy(folder, destination) -> Path:
    """`folder` rewritten in pneumo 0.1's layout: pneumo's metadata in config.json, the network in model.keras."""
    from pneumo import model_folder

    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    model_folder.load_network(folder).save(destination / "model.keras")
    config = {**model_folder.read_config(folder), "model_file": "model.keras"}
    (destination / "config.json").write_text(json.dumps(config))
    for path in [*Path(folder).glob("metrics_*.json"), *Path(folder).glob("ood_reference.npz")]:
        shutil.copy(path, destination / path.name)
    return destination


@pytest.fixture(scope="session")
def legacy_model_folder(tiny_model_folder, tmp_path_factory):
    """The tiny model as a pneumo 0.1 folder (config.json + model.keras)."""
    return legacy_copy(tiny_model_folder, tmp_path_factory.mktemp("legacy") / "tiny-legacy")


def copy_with_threshold(folder, destination, name: str, threshold: float) -> Path:
    """A copy of a model folder under another name and with another decision threshold."""
    destination = Path(destination)
    shutil.copytree(folder, destination, ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((destination / "pneumo.json").read_text())
    config.update(name=name, threshold=threshold)
    (destination / "pneumo.json").write_text(json.dumps(config))
    return destination


@pytest.fixture(scope="session")
def stricter_model(tiny_model_folder, tmp_path_factory):
    """The tiny model with a decision threshold between its probabilities, so the two disagree on some images."""
    return copy_with_threshold(tiny_model_folder, tmp_path_factory.mktemp("stricter") / "tiny-stricter",
                               "tiny-stricter", 0.5)


# The demo's models in the tests: the bundled pair first (the default comparison), then two tiny ones.
EXTRA_DEMO_MODELS = ("Tiny", "Tiny strict")


@pytest.fixture(scope="session")
def demo_predictors(tiny_model_folder, stricter_model):
    """What the demo loads in the tests: the bundled models, and two tiny ones (so that a choice of models is
    tested with more than two)."""
    from pneumo.bundled import model_references
    from pneumo.bundled import load_models

    return load_models({**model_references(), EXTRA_DEMO_MODELS[0]: str(tiny_model_folder),
                                 EXTRA_DEMO_MODELS[1]: str(stricter_model)})


@pytest.fixture(scope="session")
def app_url(demo_predictors):
    """The demo on `demo_predictors`, served on a loopback port for the length of the test session."""
    import app

    demo = app.build_app(demo_predictors)
    app.launch(demo, server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    yield demo.local_url
    demo.close()
