"""The Ray Data engine: the local engine's predictions, skipped files and reports, from files Ray reads.

Ray starts once for this module (a few seconds); each model's run then starts its own actor pool.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, write_folder_with_bad_files
from PIL import Image


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """test/normal and test/PNEUMONIA with 5 good images each and every kind of bad file among them, an
    unlabeled folder whose name starts with "_", and hidden files (never scored)."""
    root = write_folder_with_bad_files(tmp_path_factory.mktemp("mixed"), 5, seed=60,
                                       folder_names=("normal", "PNEUMONIA"), unlabeled="_unsorted", hidden=True)
    noise = np.random.default_rng(0).integers(0, 256, (1100, 1100), dtype=np.uint8)
    Image.fromarray(noise).save(root / "test" / "PNEUMONIA" / "huge.png")  # over the file limit set below
    return root


@pytest.fixture(scope="module")
def two_models(tiny_model_folder, tmp_path_factory):
    """The tiny model, and a copy with a threshold between its probabilities (so the two disagree)."""
    from pneumo.prediction.predictor import Predictor

    stricter = tmp_path_factory.mktemp("stricter") / "tiny-stricter"
    shutil.copytree(tiny_model_folder, stricter, ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((stricter / "pneumo.json").read_text())
    (stricter / "pneumo.json").write_text(json.dumps({**config, "name": "tiny-stricter", "threshold": 0.5}))
    return [Predictor.from_folder(tiny_model_folder), Predictor.from_folder(stricter)]


@pytest.fixture(scope="module")
def ray_session():
    """Ray started here as batch_eval.py starts it without --ray-address, where an earlier `ray start` left the
    address of a cluster long gone on record (in a Ray folder of the module's own, RAY_TMPDIR): Ray itself,
    given no address, tries to join that one for minutes."""
    from pneumo.batch.ray_engine import import_ray, start_ray

    folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None))  # short paths
    (folder / "ray").mkdir()
    (folder / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TMPDIR", str(folder))
        assert start_ray(), "Ray was already running in the test process"
        yield
        import_ray().shutdown()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def both_engines(ray_session, mixed_folder, two_models, tmp_path_factory):
    """(local engine's output folder, Ray engine's) for the folder, the Ray engine reading it as a file:// URI."""
    from pneumo.imaging import decoding
    from pneumo.batch.scoring import run_folder
    from pneumo.batch.ray_engine import run_folder_ray

    out = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decoding, "MAX_FILE_BYTES", 2**20)  # huge.png (1.2 MB) is refused unread by both engines
        run_folder(mixed_folder, out / "local", two_models, batch_size=4, show_progress=False)
        run_folder_ray(mixed_folder.as_uri(), out / "ray", two_models, batch_size=4, show_progress=False)
    return out / "local", out / "ray"


def read_csv(path):
    return pd.read_csv(path, keep_default_na=False, float_precision="round_trip")


def assert_same_table(left: pd.DataFrame, right: pd.DataFrame, name: str):
    """Text and counts exactly; probabilities to 1e-6 (TensorFlow's CPU kernels may round a batch of other
    images differently) and the out-of-distribution score, which magnifies those digits, to 1e-3 relative."""
    if "ood_score" in left:
        assert np.allclose(left.pop("ood_score"), right.pop("ood_score"), rtol=1e-3, atol=0), name
    pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=0, atol=1e-6, obj=name)


def test_the_ray_engine_predicts_what_the_local_engine_predicts(both_engines, two_models):
    local, ray = both_engines
    for name in ("tiny-cnn-lstm", "tiny-stricter"):
        expected = read_csv(local / name / "predictions.csv")
        assert len(expected) == 11 and "_unsorted/scan.png" in set(expected.file)
        assert_same_table(read_csv(ray / name / "predictions.csv"), expected, name)
        metrics = json.loads((ray / name / "metrics.json").read_text())
        assert (metrics["image_count"], metrics["labeled_count"], metrics["skipped_count"]) == (11, 10, 7)


def test_the_same_files_are_skipped_for_the_same_reasons(both_engines):
    local, ray = both_engines
    assert (ray / "skipped.csv").read_text() == (local / "skipped.csv").read_text()
    reasons = read_csv(ray / "skipped.csv").set_index("file").reason
    assert reasons["test/normal/empty.png"] == "the file is empty"
    assert reasons["test/PNEUMONIA/huge.png"].startswith("the image is too large to decode safely (1 MB file")
    assert "too small" in reasons["test/PNEUMONIA/tiny.png"]
    assert "<uploaded image>" not in "".join(reasons)


def test_every_report_is_the_same(both_engines):
    local, ray = both_engines
    written = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert sorted(p.relative_to(ray).as_posix() for p in ray.rglob("*") if p.is_file()) == written
    for relative in (r for r in written if r.endswith(".csv")):
        assert_same_table(read_csv(ray / relative), read_csv(local / relative), relative)
    for relative in (r for r in written if r.endswith("metrics.json")):
        left, right = (json.loads((folder / relative).read_text()) for folder in (ray, local))
        assert left.keys() == right.keys()
        for key, value in right.items():
            assert left[key] == (pytest.approx(value, abs=1e-6) if isinstance(value, float) else value), key
    ray_run, local_run = (json.loads((folder / "run.json").read_text()) for folder in (ray, local))
    assert ray_run.pop("folder") == Path(local_run.pop("folder")).as_uri() and ray_run == local_run


def test_a_model_a_ray_worker_cannot_load_is_a_one_line_error(ray_session, tiny_model_folder, mixed_folder,
                                                               tmp_path):
    """As when a model folder is not at the same path on every node of a cluster."""
    from pneumo import PneumoError
    from pneumo.batch.ray_engine import run_folder_ray
    from pneumo.prediction.predictor import Predictor

    copy = tmp_path / "tiny-copy"
    shutil.copytree(tiny_model_folder, copy, ignore=shutil.ignore_patterns("checkpoints"))
    predictor = Predictor.from_folder(copy)
    shutil.rmtree(copy)
    with pytest.raises(PneumoError, match=re.escape(f"on a Ray worker: {copy}: no such model folder")):
        run_folder_ray(mixed_folder, tmp_path / "out", [predictor], show_progress=False)


@pytest.mark.timeout(300)  # a watchdog that failed to stop the run would otherwise hang here
def test_a_run_left_no_cpu_to_read_on_stops_and_says_that_reading_stalled(ray_session, mixed_folder, two_models,
                                                                            tmp_path):
    """Another job holds every CPU that the model replica leaves (a placement group of its own), as Ray Data's
    metadata tasks once waited on a cluster of one-CPU nodes: the files are never read. The run stops after its
    stall timeout and says that reading stalled. SIGINT's handler is one that does not raise, as a web server in
    the same process may leave it: the watchdog's is used. (--resume after a stall: tests/test_watchdog.py; after
    a killed Ray run: tests/test_ray_cluster.py.)"""
    from pneumo.batch.ray_engine import import_ray, run_folder_ray, scoring_plan
    from pneumo.batch.scoring import PARTS_FOLDER
    from pneumo.errors import RunStalledError
    from ray.util.placement_group import placement_group, remove_placement_group

    ray = import_ray()
    _, slot = scoring_plan(ray.nodes())
    other_job = placement_group([{"CPU": ray.cluster_resources()["CPU"] - slot}])
    ray.get(other_job.ready(), timeout=120)  # once an earlier test's workers have let go of theirs
    previous = signal.signal(signal.SIGINT, lambda number, frame: None)
    try:
        with pytest.raises(RunStalledError, match=r"^file://.*: stopped, no progress for 5 s while reading and "
                                                  r"decoding the files; check that every node reaches"):
            run_folder_ray(mixed_folder.as_uri(), tmp_path, two_models[:1], batch_size=4, show_progress=False,
                           stall_s=5)
    finally:
        signal.signal(signal.SIGINT, previous)
        remove_placement_group(other_job)
    assert not any(tmp_path.glob(f"{PARTS_FOLDER}/*/part-*.csv"))  # nothing was read, so nothing scored


@pytest.mark.parametrize("shard", [(0, 1), (1, 3)])
def test_a_storage_uri_is_listed_as_discover_lists_the_folder(mixed_folder, shard):
    from pneumo.batch.scoring import discover
    from pneumo.batch.storage import list_files

    _, files, sizes = list_files(mixed_folder.as_uri(), shard)
    assert [f.relative for f in files] == [f.relative for f in discover(mixed_folder, shard)]
    assert sizes == [f.path.stat().st_size for f in files]


def test_an_empty_folder_is_nothing_to_score_before_ray_starts(tmp_path, two_models):
    from pneumo.batch.ray_engine import run_folder_ray
    from pneumo.errors import NothingToScoreError

    with pytest.raises(NothingToScoreError, match="no files to score"):
        run_folder_ray(tmp_path, tmp_path / "out", two_models, ray_address="ray://nowhere:1")


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch, mixed_folder, two_models, tmp_path):
    from pneumo import PneumoError
    from pneumo.batch.ray_engine import run_folder_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as it does where Ray is not installed
    with pytest.raises(PneumoError, match="pip install -r requirements-ray.txt"):
        run_folder_ray(mixed_folder, tmp_path, two_models)


def nodes(*cpus) -> list[dict]:
    """`ray.nodes()` of a cluster whose live nodes have these CPUs (and one node that has died)."""
    return [{"Alive": True, "Resources": {"CPU": count} if count else {}} for count in cpus] + [
        {"Alive": False, "Resources": {}}]


@pytest.mark.parametrize("cpus, replicas, slot", [
    ((2,), 1, 1.0),        # this machine: one replica and one decoding task, each a CPU (as before)
    ((16, 16), 2, 1.0),    # a replica per node, 15 CPUs per node left to read and decode
    ((1, 1), 2, 0.5),      # one CPU per node (issue 25): a replica and a task share each node's CPU
    ((0, 1, 1), 2, 0.5),   # a head without CPUs holds no replica
    ((0, 8, 1), 2, 0.5),   # the smallest node sets the slot
    ((1,), 1, 0.5),        # a one-CPU machine
])
def test_replicas_never_take_every_cpu_of_a_node(cpus, replicas, slot):
    """One replica per node with CPUs at most (reserve_replicas holds them there), each node keeping a slot for a
    task that reads and decodes."""
    from pneumo.batch.ray_engine import scoring_plan

    assert scoring_plan(nodes(*cpus)) == (replicas, slot)
    assert replicas <= sum(1 for count in cpus if count)
    assert all(count - slot >= slot for count in cpus if count)


def test_replicas_asked_for_are_one_per_node_at_most():
    from pneumo.batch.ray_engine import scoring_plan

    assert scoring_plan(nodes(1, 1), actors=8) == (2, 0.5)
    assert scoring_plan(nodes(4), actors=2) == (1, 1.0)
    assert scoring_plan(nodes(4, 4, 4), actors=2) == (2, 1.0)


def test_a_cluster_without_cpus_is_a_one_line_error():
    from pneumo import PneumoError
    from pneumo.batch.ray_engine import scoring_plan

    with pytest.raises(PneumoError, match="has no CPUs"):
        scoring_plan(nodes(0))


def test_an_address_without_a_cluster_is_a_one_line_error():
    """In a child process (this one runs Ray), with Ray's retries and waits cut short."""
    joining = ("from pneumo import PneumoError\nfrom pneumo.batch.ray_engine import start_ray\n"
               "try:\n    start_ray('127.0.0.1:1')\nexcept PneumoError as error:\n    print(error)")
    impatient = {"RAY_gcs_server_port_wait_time_s": "1", "RAY_py_gcs_connect_timeout_s": "1",
                 "RAY_gcs_rpc_server_connect_timeout_s": "1"}
    run = subprocess.run([sys.executable, "-c", joining], check=False, cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**os.environ, **impatient})
    assert run.stdout.startswith("--ray-address 127.0.0.1:1: cannot join a Ray cluster there ("), run.stderr[-2000:]
    assert len(run.stdout.strip().splitlines()) == 1
