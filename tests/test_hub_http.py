"""The real huggingface_hub download and upload code against a loopback Hub (HF_ENDPOINT=http://127.0.0.1:PORT).

Each pull and push runs in a fresh process, as the Hub library reads HF_ENDPOINT, HF_HUB_CACHE and
HF_HUB_OFFLINE once, at import.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from loopback_hub import LoopbackHub, Repo, client_env

MAIN = "a" * 40
OLDER = "b" * 40
PULL = """
import json, os, sys
from pneumo.errors import PneumoError
from pneumo.hub.repos import resolve_model_folder
try:
    folder, commit = resolve_model_folder(sys.argv[1])
    print(json.dumps({"commit": commit, "files": sorted(os.listdir(folder)), "folder": str(folder)}))
except PneumoError as error:
    print(json.dumps({"error": type(error).__name__, "message": str(error)}))
"""


@pytest.fixture
def hub(tiny_model_folder, legacy_model_folder):
    with LoopbackHub() as server:
        files = {p.name: p.read_bytes() for p in tiny_model_folder.iterdir() if p.is_file()}
        older = {**files, "pneumo.json": files["pneumo.json"].replace(b'"threshold"', b'"threshold_was"', 1)}
        repo = Repo(files, MAIN, tags={"v1": OLDER})
        repo.commits[OLDER] = older
        server.repos["pneumo/tiny"] = repo
        server.repos["pneumo/private"] = Repo(files, MAIN, token="hf_right")
        server.repos["pneumo/no-model"] = Repo({k: v for k, v in files.items() if k != "model.weights.h5"}, MAIN)
        server.repos["pneumo/legacy"] = Repo({p.name: p.read_bytes() for p in legacy_model_folder.iterdir()}, MAIN)
        yield server


def pull(hub, tmp_path, reference, offline=False, token=None, script=PULL):
    env = {**client_env(hub.url, tmp_path / "hf", token), "HF_HUB_OFFLINE": "1" if offline else "0",
           "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script, reference], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_first_pull_downloads_only_the_model_files(hub, tmp_path):
    result = pull(hub, tmp_path, "pneumo/tiny")
    assert result["commit"] == MAIN
    assert result["files"] == ["README.md", "config.json", "metadata.json", "metrics_validation.json",
                               "model.weights.h5", "ood_reference.npz", "pneumo.json"]
    assert sorted(path.rsplit("/", 1)[-1] for path in hub.downloads()) == result["files"]


def test_a_cached_pinned_pull_sends_no_request(hub, tmp_path):
    pull(hub, tmp_path, f"pneumo/tiny@{MAIN}")
    hub.requests.clear()
    assert pull(hub, tmp_path, f"pneumo/tiny@{MAIN}")["commit"] == MAIN
    assert hub.requests == []


def test_a_cached_branch_pull_only_asks_which_commit_main_is(hub, tmp_path):
    pull(hub, tmp_path, "pneumo/tiny")
    hub.requests.clear()
    assert pull(hub, tmp_path, "pneumo/tiny")["commit"] == MAIN
    assert hub.downloads() == [] and len(hub.requests) == 1


def test_a_tag_pins_its_own_commit(hub, tmp_path):
    result = pull(hub, tmp_path, "pneumo/tiny@v1")
    assert result["commit"] == OLDER
    assert b"threshold_was" in open(os.path.join(result["folder"], "pneumo.json"), "rb").read()


def test_offline_a_cached_revision_loads_and_an_uncached_one_says_what_to_do(hub, tmp_path):
    pull(hub, tmp_path, "pneumo/tiny")
    hub.requests.clear()
    assert pull(hub, tmp_path, "pneumo/tiny", offline=True)["commit"] == MAIN
    missing = pull(hub, tmp_path, "pneumo/tiny@v1", offline=True)
    assert missing["error"] == "HubUnavailableError" and "not in the local cache" in missing["message"]
    assert hub.requests == []


def test_a_missing_repo_or_revision_is_not_found(hub, tmp_path):
    assert pull(hub, tmp_path, "pneumo/absent")["error"] == "ModelNotFoundError"
    revision = pull(hub, tmp_path, "pneumo/tiny@v9")
    assert revision["error"] == "ModelNotFoundError" and "v9" in revision["message"]


def test_a_private_repo_needs_the_right_token(hub, tmp_path):
    assert pull(hub, tmp_path, "pneumo/private", token="hf_right")["commit"] == MAIN
    without = pull(hub, tmp_path / "other", "pneumo/private")
    assert without["error"] == "ModelNotFoundError" and "HF_TOKEN" in without["message"]
    wrong = pull(hub, tmp_path / "third", "pneumo/private", token="hf_wrong")
    assert wrong["error"] == "ModelLoadError" and "HF_TOKEN" in wrong["message"]


def test_a_server_that_drops_the_connection_is_a_clear_error(hub, tmp_path):
    hub.drop_connections = True
    result = pull(hub, tmp_path, "pneumo/tiny")
    assert result["error"] == "HubUnavailableError"


def test_a_repo_without_its_model_file_is_refused_when_loading(hub, tmp_path):
    script = PULL.replace("from pneumo.hub.repos import resolve_model_folder",
                          "from pneumo.hub.loading import load_predictor").replace(
        "folder, commit = resolve_model_folder(sys.argv[1])", "load_predictor(sys.argv[1])")
    result = pull(hub, tmp_path, "pneumo/no-model", script=script)
    assert result["error"] == "ModelLoadError" and "model.weights.h5 is missing" in result["message"]


PREDICT = PULL.replace("from pneumo.hub.repos import resolve_model_folder", "from pneumo.hub.loading import load_predictor").replace(
    'folder, commit = resolve_model_folder(sys.argv[1])\n    print(json.dumps({"commit": commit, "files": '
    'sorted(os.listdir(folder)), "folder": str(folder)}))',
    f'p = load_predictor(sys.argv[1])\n    print(json.dumps(p.predict_file({str(REPO / "examples" / "normal_IM-0039-0001.jpeg")!r}).to_dict()))')


@pytest.mark.parametrize("repo", ["pneumo/tiny", "pneumo/legacy"])
def test_a_pulled_model_predicts_and_reports_its_commit(hub, tmp_path, repo):
    result = pull(hub, tmp_path, repo, script=PREDICT)
    assert result["revision"] == MAIN and result["label"] in ("NORMAL", "PNEUMONIA")


def test_keras_loads_a_published_repo_by_its_hf_url(hub, tmp_path):
    """The Hub's "Use this model" snippet for a Keras repo: keras.saving.load_model("hf://OWNER/NAME")."""
    script = """
import json, sys
import keras
model = keras.saving.load_model("hf://" + sys.argv[1], compile=False)
print(json.dumps({"output_shape": list(model.output_shape)}))
"""
    assert pull(hub, tmp_path, "pneumo/tiny", script=script) == {"output_shape": [None, 2]}


def push(hub, tmp_path, folder, *args):
    """`pneumo hub push FOLDER ARGS...` against the loopback Hub."""
    return subprocess.run([sys.executable, "-m", "pneumo", "hub", "push", str(folder), *args], cwd=REPO,
                          env=client_env(hub.url, tmp_path / "hf", token="hf_write"), capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def folder(tiny_model_folder, tmp_path):
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_model_folder, copy)
    return copy


def test_a_push_lands_the_model_files_and_its_tag_and_pulls_back(hub, tmp_path, folder):
    result = push(hub, tmp_path, folder, "--repo-id", "pneumo/pushed", "--revision-tag", "v1.0")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    repo = hub.repos["pneumo/pushed"]
    assert repo.branches["main"] == plan["commit"] and repo.tags == {"v1.0": plan["commit"]}
    published = {entry["name"]: (folder / entry["name"]).read_bytes() for entry in plan["files"]}
    assert {name: data for name, data in repo.files().items() if name != ".gitattributes"} == published
    pulled = pull(hub, tmp_path, "pneumo/pushed@v1.0")
    assert pulled["commit"] == plan["commit"] and "model.weights.h5" in pulled["files"]


def test_a_second_push_with_the_same_tag_is_refused_and_commits_nothing(hub, tmp_path, folder):
    assert push(hub, tmp_path, folder, "--repo-id", "pneumo/pushed", "--revision-tag", "v1.0").returncode == 0
    head = hub.repos["pneumo/pushed"].branches["main"]
    again = push(hub, tmp_path, folder, "--repo-id", "pneumo/pushed", "--revision-tag", "v1.0")
    assert again.returncode == 1 and "--move-tag" in again.stderr and "Traceback" not in again.stderr
    assert hub.repos["pneumo/pushed"].branches["main"] == head
