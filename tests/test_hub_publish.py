"""Publishing a model folder: checks, the uploaded file set, the Hub model card, tags and auth errors.

The HfApi calls are recorded by a stand-in object; nothing reaches the real Hub.
"""

import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
from huggingface_hub import ModelCard

from conftest import REPO
from pneumo.errors import ModelLoadError
from pneumo.hub.repos import push


class RecordingApi:
    def __init__(self, fail_with=None, tags=None):
        self.calls = []
        self.fail_with = fail_with
        self.tags = tags or {}  # tag -> commit already on the Hub

    def list_repo_refs(self, repo_id, **kwargs):
        return SimpleNamespace(tags=[SimpleNamespace(name=name, target_commit=commit)
                                     for name, commit in self.tags.items()])

    def delete_tag(self, repo_id, **kwargs):
        self.calls.append(("delete_tag", repo_id, kwargs))

    def create_repo(self, repo_id, **kwargs):
        if self.fail_with:
            raise self.fail_with
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        return SimpleNamespace(oid="c" * 40)

    def create_tag(self, repo_id, **kwargs):
        self.calls.append(("create_tag", repo_id, kwargs))


@pytest.fixture
def folder(tiny_model_folder, tmp_path):
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_model_folder, copy)
    return copy


def test_push_creates_the_repo_uploads_the_model_files_and_tags_the_commit(folder):
    api = RecordingApi()
    result = push(folder, "owner/pneumo-tiny", private=True, revision_tag="v1.0", api=api)
    (create, repo_id, create_args), (upload, _, upload_args), (tag, _, tag_args) = api.calls
    assert (create, repo_id, create_args["private"], create_args["exist_ok"]) == ("create_repo", "owner/pneumo-tiny",
                                                                                   True, True)
    assert upload == "upload_folder" and upload_args["folder_path"] == str(folder)
    assert set(upload_args["allow_patterns"]) == {"pneumo.json", "config.json", "metadata.json", "model.weights.h5",
                                                  "ood_reference.npz", "README.md", "metrics_validation.json", "history.csv",
                                                  "training_curves.png", "data_split.csv"}
    # Files of an earlier upload that the folder no longer has (a pneumo 0.1 model.keras) go in the same commit.
    assert "metrics_*.json" in upload_args["delete_patterns"] and "model.keras" in upload_args["delete_patterns"]
    assert (tag, tag_args["tag"], tag_args["revision"]) == ("create_tag", "v1.0", "c" * 40)
    assert result["commit"] == "c" * 40


def test_the_uploaded_card_carries_hub_metadata_and_results(folder):
    (folder / "metrics_test.json").write_text(json.dumps({"accuracy": 0.9, "roc_auc": 0.95, "n_images": 624,
                                                          "threshold": 0.5, "confusion_matrix": [[1, 0], [0, 1]]}))
    push(folder, "owner/pneumo-tiny", api=RecordingApi())
    card = ModelCard((folder / "README.md").read_text())
    assert card.data.library_name == "keras" and card.data.pipeline_tag == "image-classification"
    assert card.data.license == "cc-by-4.0" and card.data.datasets and "pneumonia" in card.data.tags
    splits = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    # Only the public dataset's test split: our validation split and hold-out are parts of its train split.
    assert splits[("test", "accuracy")] == 0.9 and {split for split, _ in splits} == {"test"}
    assert "Intended use" in card.text and "Limitations" in card.text and "Training recipe" in card.text


def test_dry_run_lists_the_upload_and_calls_and_writes_nothing(folder):
    api = RecordingApi()
    (folder / "README.md").write_text("the card as the user left it")
    plan = push(folder, "owner/x", dry_run=True, api=api)
    assert api.calls == []
    assert {"model.weights.h5", "README.md"} <= {f["name"] for f in plan["files"]} and "commit" not in plan
    assert (folder / "README.md").read_text() == "the card as the user left it"


def test_an_existing_tag_is_refused_before_anything_is_uploaded(folder):
    api = RecordingApi(tags={"v1.0": "a" * 40})
    with pytest.raises(ModelLoadError, match="--move-tag"):
        push(folder, "owner/x", revision_tag="v1.0", api=api)
    assert api.calls == []


def test_move_tag_moves_an_existing_tag_to_the_new_commit(folder):
    api = RecordingApi(tags={"v1.0": "a" * 40})
    push(folder, "owner/x", revision_tag="v1.0", move_tag=True, api=api)
    assert [call[0] for call in api.calls] == ["create_repo", "upload_folder", "delete_tag", "create_tag"]
    assert api.calls[-1][2]["revision"] == "c" * 40


def test_an_unreachable_hub_is_one_line_not_a_traceback(folder):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run([sys.executable, "-m", "pneumo", "hub", "push", str(folder), "--repo-id", "owner/x"],
                            cwd=REPO, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_TOKEN": "hf_test",
                                 "HF_HUB_OFFLINE": "0", "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"})
    assert result.returncode == 1
    assert "cannot be reached" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_incomplete_folder_is_refused_before_any_call(folder):
    (folder / "metrics_validation.json").unlink()
    api = RecordingApi()
    with pytest.raises(ModelLoadError, match="missing metrics_validation.json"):
        push(folder, "owner/x", api=api)
    assert api.calls == []


def test_a_rejected_token_is_a_clear_error(folder):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    response = httpx2.Response(401, request=httpx2.Request("POST", "http://127.0.0.1/api/repos/create"))
    with pytest.raises(ModelLoadError, match="HF_TOKEN"):
        push(folder, "owner/x", api=RecordingApi(fail_with=HfHubHTTPError("401", response=response)))


def test_the_command_line_dry_run_prints_the_plan(folder):
    result = subprocess.run([sys.executable, "-m", "pneumo", "hub", "push", str(folder), "--repo-id", "owner/x",
                             "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["repo_id"] == "owner/x"
