"""s3:// folders: the Ray engine lists and reads a bucket through the S3 API, as it does the same folder on disk.

The bucket lives in moto's S3 server, in its own process on a loopback port; everything reaches it as it would reach
AWS or an S3-compatible store, through the usual AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION, AWS_ENDPOINT_URL). The README's example runs as written, Ray starting on this machine, in this
process: the one Ray of the module.
"""

import os
import re
import shlex
import shutil
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, synthetic_xray, upload_folder, write_folder_with_bad_files
from PIL import Image
from test_batch_eval import BAD_FILES
from test_batch_ray import assert_same_table, read_csv

AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
README_URI = "s3://my-bucket/xrays"  # where the README's example reads from


@pytest.fixture(scope="module")
def xray_folder(tmp_path_factory):
    """test/NORMAL and test/PNEUMONIA with 5 good images each (one named with spaces) and every kind of bad file
    among them, an unlabeled folder, and hidden files (never scored)."""
    root = write_folder_with_bad_files(tmp_path_factory.mktemp("xrays"), 5, seed=70, unlabeled="unsorted", hidden=True)
    Image.fromarray(synthetic_xray(seed=71)).save(root / "test" / "NORMAL" / "scan 2 (copy).png")
    return root


@pytest.fixture(scope="module")
def s3(s3_server, xray_folder):
    """The AWS variables that reach the bucket `my-bucket`, which holds `xray_folder` under xrays/ (and an empty
    "folder" object, as S3 consoles make them), set in this process too for the module's length."""
    assert upload_folder(s3_server, xray_folder, "my-bucket", "xrays") == README_URI
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("AWS_")]:  # a profile, another endpoint...
            patch.delenv(name)
        for name, value in s3_server.items():
            patch.setenv(name, value)
        yield s3_server


@pytest.mark.parametrize("shard", [(0, 1), (1, 3)])
def test_a_bucket_is_listed_as_discover_lists_the_folder_on_disk(s3, xray_folder, shard):
    from pneumo.batch.scoring import discover
    from pneumo.batch.storage import list_files

    _, files, sizes = list_files(README_URI, shard)
    on_disk = discover(xray_folder, shard)
    assert [f.relative for f in files] == [f.relative for f in on_disk]
    assert sizes == [f.path.stat().st_size for f in on_disk]
    if shard == (0, 1):
        assert len(files) == 10 + 1 + len(BAD_FILES) + 2  # good, spaced name, bad, tiny, unsorted


def test_a_missing_bucket_is_a_one_line_error(s3):
    from pneumo import PneumoError
    from pneumo.batch.storage import list_files

    with pytest.raises(PneumoError, match=r"^s3://no-such-bucket/xrays: cannot list it \(.*bucket does not exist"):
        list_files("s3://no-such-bucket/xrays")


# A worker: a process without any AWS variable, which reads a file with the filesystem it is sent (pickled).
WORKER = """
import pickle, sys
from pneumo.batch.storage import read_bytes

filesystem = pickle.load(sys.stdin.buffer)
sys.stdout.buffer.write(read_bytes(filesystem, sys.argv[1]))
"""


def test_a_worker_without_settings_of_its_own_reads_with_those_set_here(s3, xray_folder):
    """The endpoint, the bucket's region and the keys set where batch_eval.py runs travel inside the filesystem
    that the tasks get; pyarrow alone would send them without the region and the keys."""
    from pneumo.batch.storage import list_files

    filesystem, files, _ = list_files(README_URI)
    options = pickle.loads(pickle.dumps(filesystem)).__reduce__()[1][0]  # what a worker unpickles
    assert (options["region"], options["endpoint_override"]) == ("eu-west-1", s3["AWS_ENDPOINT_URL"])
    assert (options["access_key"], options["secret_key"]) == (s3["AWS_ACCESS_KEY_ID"], s3["AWS_SECRET_ACCESS_KEY"])
    bare = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    bare.update(HOME=tempfile.mkdtemp(), PYTHONPATH=str(REPO))  # no ~/.aws either
    read = subprocess.run([sys.executable, "-c", WORKER, str(files[0].path)], input=pickle.dumps(filesystem),
                          capture_output=True, env=bare, timeout=120, check=False)
    assert read.returncode == 0, read.stderr.decode()[-2000:]
    assert b"FinalizeS3" not in read.stderr, read.stderr.decode()  # else it may crash at exit, as it did here once
    assert read.stdout == (xray_folder / files[0].relative).read_bytes()


def test_only_settings_that_are_no_secret_reach_the_workers_environment(s3):
    from pneumo.batch.storage import worker_environment

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_PROFILE", "radiology")
        patch.setenv("AWS_SESSION_TOKEN", "token")
        assert worker_environment() == {"AWS_PROFILE": "radiology", "AWS_DEFAULT_REGION": "eu-west-1",
                                        "AWS_ENDPOINT_URL": s3["AWS_ENDPOINT_URL"]}


def readme_example() -> tuple[set[str], list[str]]:
    """(the variables docs/scale-out.md's object-storage example exports, its batch_eval.py command)."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "docs" / "scale-out.md").read_text(), re.DOTALL)
    block = next(block for block in blocks if README_URI in block and "--ray-address" not in block)
    exported = {name for line in block.splitlines() if line.startswith("export ")
                for name in re.findall(r"(\w+)=", line.split("#")[0])}
    commands = [line for line in block.splitlines() if line.startswith("python batch_eval.py")]
    assert len(commands) == 1, block
    return exported, shlex.split(commands[0].split("#")[0])


@pytest.fixture(scope="module")
def readme_run(s3, tiny_model_folder, tmp_path_factory):
    """The reports folder of the README's example, run as written (batch_eval.main, which `python batch_eval.py`
    calls, with its arguments) in a folder of its own, with the variables it exports set to reach the bucket, and
    the tiny model in place of the bundled ones (PNEUMO_MODELS and PNEUMO_CNN_LSTM_MODEL, as the README says)."""
    import batch_eval

    exported, command = readme_example()
    assert exported == set(AWS_VARIABLES)
    assert command[:2] == ["python", "batch_eval.py"]
    here = tmp_path_factory.mktemp("readme")
    ray_folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None))  # short paths
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(here)
        patch.delenv("RAY_ADDRESS", raising=False)
        patch.setenv("RAY_TMPDIR", str(ray_folder))
        patch.setenv("PNEUMO_MODELS", "CNN+LSTM")
        patch.setenv("PNEUMO_CNN_LSTM_MODEL", str(tiny_model_folder))
        try:
            assert batch_eval.main(command[2:]) == 0
        finally:
            shutil.rmtree(ray_folder, ignore_errors=True)
    return here / command[command.index("--out") + 1]


@pytest.fixture(scope="module")
def on_disk(xray_folder, tiny_model_folder, tmp_path_factory):
    """The reports of the same folder on disk, scored by the local engine."""
    from pneumo.batch.scoring import run_folder
    from pneumo.prediction.predictor import Predictor

    out = tmp_path_factory.mktemp("on-disk")
    run_folder(xray_folder, out, [Predictor.from_folder(tiny_model_folder)], show_progress=False, figures=False,
               intervals=False)
    return out


def test_the_readme_example_predicts_what_the_folder_on_disk_gets(readme_run, on_disk, tiny_model_folder):
    scored = read_csv(readme_run / tiny_model_folder.name / "predictions.csv")
    expected = read_csv(on_disk / tiny_model_folder.name / "predictions.csv")
    assert len(expected) == 12 and {"unsorted/scan.png", "test/NORMAL/scan 2 (copy).png"} <= set(expected.file)
    assert_same_table(scored, expected, "predictions.csv")


def test_bad_files_in_a_bucket_are_skipped_with_the_reasons_given_on_disk(readme_run, on_disk):
    assert (readme_run / "skipped.csv").read_text() == (on_disk / "skipped.csv").read_text()
    reasons = read_csv(readme_run / "skipped.csv").set_index("file").reason
    assert len(reasons) == len(BAD_FILES) + 1
    assert reasons["test/NORMAL/empty.png"] == "the file is empty"
    assert "too small" in reasons["test/PNEUMONIA/tiny.png"]
    assert np.all(reasons.str.len() > 0)
