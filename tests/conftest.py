"""Shared fixtures: the real example X-rays, image files written in every format, and a tiny trained model."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the suite never reaches the real Hub

import io
import json
import shutil
import struct
import tempfile
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo.hub.bundled import BUNDLED_MODELS as BUNDLED_BY_NAME

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
# The folders that ship with pneumo (pneumo.hub.bundled lists them once).
BUNDLED_MODELS = [folder for _, folder in BUNDLED_BY_NAME.values()]

# The suite runs on pytest-xdist's workers (pyproject.toml: -n auto --dist loadfile). Each test module runs whole on
# one worker, so that its module fixtures are made once; the modules of a group here run on the same worker, one
# after another: those that start Ray (one Ray at a time on the machine, and each start costs seconds), and those that
# load the bundled models or serve the demo on them (loaded once per worker).
WORKER_GROUPS = {
    "ray": ("test_batch_ray.py", "test_object_storage.py", "test_ray_cluster.py"),
    "bundled-models": ("test_app.py", "test_browser.py", "test_bundled_models.py", "test_deferred_networks.py",
                       "test_dicom_compression.py", "test_encodings.py", "test_explanation.py", "test_ood.py"),
}
MAX_WORKERS = 4  # each holds TensorFlow and the bundled models, about 2 GB


def worker_group(nodeid: str) -> str:
    """The group of WORKER_GROUPS that a test belongs to, else its module's path."""
    module = nodeid.split("::", 1)[0]
    name = module.rsplit("/", 1)[-1]
    return next((group for group, modules in WORKER_GROUPS.items() if name in modules), module)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile, with the modules of a group of WORKER_GROUPS as one file. (xdist_group marks would not do:
    pytest-xdist 3.8's --dist loadgroup renames the tests to group them, which pytest 9 no longer lets it do.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ByModuleGroup(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    return ByModuleGroup(config, log)


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: a worker per CPU this process may use, at most MAX_WORKERS."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


def made_once(tmp_path_factory, name: str, make) -> Path:
    """The folder `name` that `make(folder)` fills, made once for the whole run: by the first of pytest-xdist's
    workers to ask, in the run's shared temporary folder, while the others wait for it. Tests must not change it."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            make(folder)
            done.touch()
    return folder


def own_copy(folder: Path, tmp_path_factory, parent: str) -> Path:
    """A copy of `folder`, under the same name, that this worker's tests may write into (logs of test-set scorings,
    say), as they could when each worker made its own."""
    return Path(shutil.copytree(folder, tmp_path_factory.mktemp(parent) / folder.name, symlinks=True))


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


def transcode(source, destination, syntax: str):
    """Rewrite a DICOM file in another transfer syntax with GDCM's own encoders."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change(), syntax
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(destination))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    return destination


def bomb_png(width=100_000, height=100_000) -> bytes:
    """A valid PNG header that claims 10 gigapixels: decoding it would exhaust memory."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    return example_images()[0].read_bytes()[:2000]


def run_at_once(function, threads: int, timeout: float = 120) -> list:
    """`function()` on `threads` threads released together, as concurrent first requests arrive: their results in
    thread order. A call that raises fails the test with its exception; one that has not ended in `timeout` fails it."""
    start, results, errors = threading.Barrier(threads), [None] * threads, []

    def call(index):
        start.wait()
        try:
            results[index] = function()
        except BaseException as error:  # noqa: BLE001  (raised again below, in the test's own thread)
            errors.append(error)

    workers = [threading.Thread(target=call, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout)
    assert not any(worker.is_alive() for worker in workers), f"a call did not end in {timeout} s"
    if errors:
        raise errors[0]
    return results


def bad_files() -> dict[str, bytes]:
    """One file of each kind a folder scoring must skip with a reason, by name."""
    return {
        "empty.png": b"",
        "truncated.jpeg": truncated_jpeg(),
        "report.png": b"%PDF-1.4 a PDF renamed .png",
        "notes.txt": b"not an image at all",
        "bomb.png": bomb_png(),
    }


def write_folder_with_bad_files(root: Path, count: int, *, seed: int, folder_names=("NORMAL", "PNEUMONIA"),
                                unlabeled: str | None = None, hidden: bool = False) -> Path:
    """`root`/test/<class folders> with `count` synthetic X-rays each, every bad file of `bad_files()` in the first
    class folder and an image too small to score in the second; with `unlabeled`, a folder of that name beside
    test/ holding one X-ray; with `hidden`, a hidden folder and a hidden file (never scored)."""
    write_synthetic_class_folders(root / "test", count, folder_names=folder_names, seed=seed)
    first, second = (root / "test" / name for name in folder_names)
    for name, content in bad_files().items():
        (first / name).write_bytes(content)
    Image.fromarray(synthetic_xray()[:30, :30]).save(second / "tiny.png")
    if unlabeled:
        (root / unlabeled).mkdir()
        Image.fromarray(synthetic_xray(seed=7)).save(root / unlabeled / "scan.png")
    if hidden:
        (root / ".cache").mkdir()
        Image.fromarray(synthetic_xray(seed=8)).save(root / ".cache" / "hidden.png")
        (first / ".DS_Store").write_bytes(b"Finder's notes")
    return root


def gif_bytes(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """train/NORMAL and train/PNEUMONIA with 24 synthetic images each, several per 'patient' (read-only)."""
    return made_once(tmp_path_factory, "synthetic", lambda root: write_synthetic_class_folders(root / "train", 24))


def trained_once(tmp_path_factory, data: Path, name: str, options: list[str]) -> Path:
    """`pneumo train` on `data` into a folder `name`, with `options`: trained once for all workers (made_once), and
    this worker's own copy of the folder."""
    from pneumo.training.train import main

    def train(models):
        assert main([*options, "--data", str(data), "--out", str(models / name)]) == 0

    return own_copy(made_once(tmp_path_factory, f"trained-{name}", train) / name, tmp_path_factory, "models")


# The tiny CNN+LSTM's training (tests/test_train.py resumes it).
TINY_CNN_LSTM_OPTIONS = ["--arch", "cnn_lstm", "--input-size", "64", "--batch-size", "8",
                         "--validation-fraction", "0.25"]


@pytest.fixture(scope="session")
def tiny_model_folder(synthetic_dataset, tmp_path_factory):
    """A cnn_lstm trained for 2 epochs at 64x64 on the synthetic set, exported like a bundled model."""
    return trained_once(tmp_path_factory, synthetic_dataset, "tiny-cnn-lstm", [*TINY_CNN_LSTM_OPTIONS, "--epochs", "2"])


TINY_ROW_LSTM_SIDE = 24


@pytest.fixture(scope="session")
def row_lstm_folder(synthetic_dataset, tmp_path_factory):
    """A row_lstm trained for 1 epoch at 24x24 on the synthetic set, exported like a released model (one batch
    holds the whole training split: the LSTMs' training step, slow to trace, is traced once). It shares the
    tiny CNN+LSTM's data split, so the two make an ensemble."""
    return trained_once(tmp_path_factory, synthetic_dataset, "tiny-row-lstm",
                        ["--arch", "row_lstm", "--epochs", "1", "--input-size", str(TINY_ROW_LSTM_SIDE),
                         "--batch-size", "64", "--validation-fraction", "0.25"])


def legacy_copy(folder, destination) -> Path:
    """`folder` rewritten in pneumo 0.1's layout: pneumo's metadata in config.json, the network in model.keras."""
    from pneumo.hub import model_folder

    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    model_folder.load_network(folder).save(destination / "model.keras")
    config = {**model_folder.read_config(folder), "model_file": "model.keras"}
    (destination / "config.json").write_text(json.dumps(config))
    for path in [*Path(folder).glob("metrics_*.json"), *Path(folder).glob("ood_reference.npz")]:
        shutil.copy(path, destination / path.name)
    return destination


def assert_close(left, right, where="metrics", tolerance=1e-6):
    """Equal JSON: the same keys and lengths, counts (ints) and text exactly, floats within `tolerance`, at any
    depth (intervals and subgroups are nested)."""
    if isinstance(right, dict):
        assert left.keys() == right.keys(), where
        for key in right:
            assert_close(left[key], right[key], f"{where}.{key}", tolerance)
    elif isinstance(right, list):
        assert len(left) == len(right), where
        for index, (a, b) in enumerate(zip(left, right)):
            assert_close(a, b, f"{where}[{index}]", tolerance)
    elif isinstance(right, float):
        assert left == pytest.approx(right, abs=tolerance), where
    else:
        assert left == right, where


def assert_operating_points_fitted_on_validation(predictor, data_root) -> None:
    """The operating points in a model (or ensemble) folder's pneumo.json are those of its calibrated
    probabilities on its validation split, scored now: Youden's point (the default threshold) maximises
    sensitivity + specificity - 1 there, the screening point is the highest threshold that still finds 95% of
    the pneumonias; both sit on one image's probability (a ROC point) strictly inside (0, 1), and
    metrics_validation.json is measured at the threshold."""
    import pandas as pd

    config = json.loads((predictor.folder / "pneumo.json").read_text())
    metrics = json.loads((predictor.folder / "metrics_validation.json").read_text())
    split = pd.read_csv(predictor.folder / "data_split.csv")
    validation = split[split.split == "validation"]
    positive = (validation.class_name == predictor.positive_class).to_numpy()
    probability = np.array([predictor.predict_file(Path(data_root) / path).positive_probability
                            for path in validation.path])
    assert positive.any() and not positive.all()
    points = config["operating_points"]
    assert config["operating_point"] == "youden" and config["threshold"] == points["youden"] == metrics["threshold"]
    tolerance = 1e-6  # scored now in other batches than when fitted: the last digits may differ (by 1e-9 here)

    def on_a_probability(point) -> float:
        """The image probability (scored now) that the operating point sits on."""
        nearest = probability[np.abs(probability - point).argmin()]
        assert 0.0 < point < 1.0 and abs(nearest - point) < tolerance, point
        return nearest

    def youden(threshold) -> float:
        return (probability[positive] >= threshold).mean() + (probability[~positive] < threshold).mean() - 1

    threshold = on_a_probability(points["youden"])
    best = max(youden(p) for p in probability)
    assert best > 0  # the threshold separates something (J = 0 calls every image one class)
    assert youden(threshold) == pytest.approx(best, abs=1e-9)
    # metrics_validation.json counts the validation split's images at the threshold.
    tn, fp = ((probability[~positive] < threshold).sum(), (probability[~positive] >= threshold).sum())
    fn, tp = ((probability[positive] < threshold).sum(), (probability[positive] >= threshold).sum())
    assert metrics["confusion_matrix"] == [[tn, fp], [fn, tp]]
    screening = on_a_probability(points["sensitivity_95"])
    assert (probability[positive] >= screening).mean() >= 0.95
    assert all((probability[positive] >= p).mean() < 0.95 for p in probability if p > screening)


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


@pytest.fixture(scope="session")
def bundled_predictors():
    """Every bundled model (pneumo.hub.bundled.BUNDLED_MODELS), loaded once for the whole session: folder name ->
    Predictor. Tests share these objects and must not change them (a test that needs another threshold builds
    a new Predictor on the same network)."""
    from pneumo.hub.bundled import load_models

    loaded = load_models({name: str(folder) for name, (_, folder) in BUNDLED_BY_NAME.items()})
    return {BUNDLED_BY_NAME[name][1].name: predictor for name, predictor in loaded.items()}


# The demo's models in the tests: the bundled pair first (the default comparison), then two tiny ones.
EXTRA_DEMO_MODELS = ("Tiny", "Tiny strict")


@pytest.fixture(scope="session")
def demo_predictors(bundled_predictors, tiny_model_folder, stricter_model):
    """What the demo loads in the tests: the bundled models (the session's, unless a PNEUMO_*_MODEL variable
    points one elsewhere), and two tiny ones (so that a choice of models is tested with more than two)."""
    from pneumo.hub.bundled import load_models, model_references

    shown = {}
    for name, reference in model_references().items():
        folder = BUNDLED_BY_NAME[name][1]
        shown[name] = (bundled_predictors[folder.name] if reference == str(folder)
                       else load_models({name: reference})[name])
    return {**shown, **load_models({EXTRA_DEMO_MODELS[0]: str(tiny_model_folder),
                                    EXTRA_DEMO_MODELS[1]: str(stricter_model)})}


@pytest.fixture(scope="session")
def app_temp_dir(tmp_path_factory):
    """The one temporary folder of the demos served in the tests: Python's default temporary folder (the
    heatmaps' short-lived folders) and Gradio's cache (uploads, outputs, PDF reports) inside it, so that a test
    can read everything the app wrote. Set before an app is built: Gradio reads GRADIO_TEMP_DIR then."""
    folder = tmp_path_factory.mktemp("app-temp")
    patch = pytest.MonkeyPatch()
    patch.setenv("GRADIO_TEMP_DIR", str(folder / "gradio"))
    patch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    patch.undo()


@pytest.fixture(scope="session")
def app_url(demo_predictors, app_temp_dir):
    """The demo on `demo_predictors`, served on a loopback port for the length of the test session."""
    import app

    demo = app.build_app(demo_predictors)
    app.launch(demo, server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    yield demo.local_url
    demo.close()


# moto's S3 server on a free loopback port, which it prints; it stops when the test process closes its stdin.
S3_SERVER = """
import sys
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""
S3_SECRET = "pneumo-test-secret-7f3a"  # the secret key: a test checks that it never reaches a log or an output


@pytest.fixture(scope="session")
def s3_server():
    """The AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL) that reach
    an S3 server of the session's own, in its own process on a loopback port, as they would reach AWS or an
    S3-compatible store. They are not set in this process: a test sets them where it needs them."""
    import subprocess
    import sys

    server = subprocess.Popen([sys.executable, "-c", S3_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(server.stdout.readline())
        yield {"AWS_ACCESS_KEY_ID": "pneumo-test", "AWS_SECRET_ACCESS_KEY": S3_SECRET,
               "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    finally:
        server.stdin.close()
        server.wait(timeout=60)


def upload_folder(variables: dict, folder: Path, bucket: str, prefix: str) -> str:
    """Every file under `folder` put in `bucket` (created if need be) under `prefix`, with an empty "folder"
    object as S3 consoles make them; returns the folder's s3:// URI."""
    import boto3

    client = boto3.client("s3", region_name=variables["AWS_DEFAULT_REGION"],
                          endpoint_url=variables["AWS_ENDPOINT_URL"], aws_access_key_id=variables["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=variables["AWS_SECRET_ACCESS_KEY"])
    if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=bucket,
                             CreateBucketConfiguration={"LocationConstraint": variables["AWS_DEFAULT_REGION"]})
    client.put_object(Bucket=bucket, Key=f"{prefix}/", Body=b"")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return f"s3://{bucket}/{prefix}"
