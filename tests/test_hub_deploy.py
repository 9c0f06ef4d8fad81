"""Deploying the demo to a Hugging Face Space from the working tree (pneumo hub deploy-space).

Most tests record the HfApi calls with a stand-in object; the last ones run the command against the
loopback Hub (tests/loopback_hub.py) over real HTTP, and against a port nothing listens on.
"""

import json
import shutil
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, SpaceCard

from conftest import REPO
from loopback_hub import LoopbackHub, client_env
from pneumo.hub.bundled import BUNDLED_MODELS, model_references
from pneumo.errors import ModelLoadError, SpaceDeployError
from pneumo.hub.space import deploy_space

SPACE = "owner/pneumo-demo"
# Two repos: a demo of the first two bundled models, whichever others are bundled.
MODELS = ["owner/pneumo-cnn-lstm", "owner/pneumo-resnet50"]
VARIABLES = {"PNEUMO_CNN_LSTM_MODEL": MODELS[0], "PNEUMO_RESNET50_MODEL": MODELS[1], "PNEUMO_MODELS": "CNN+LSTM,ResNet50"}
MODEL_FILES = {"pneumo.json", "config.json", "metadata.json", "model.weights.h5", "ood_reference.npz", "README.md",
               "metrics_validation.json", "metrics_test.json"}
# The repository's README as it stands before the models are published (fixed here: the real one is edited).
README = """---
title: pneumo
emoji: 🫁
sdk: gradio
sdk_version: 6.31.0
python_version: "3.11"
app_file: app.py
license: mit
# Once the models are published, name them here:
# models:
#   - OWNER/pneumo-cnn-lstm
---

# pneumo

What the demo does, and how to run it.
"""
# Files in the working tree that must stay off the Space.
NOT_FOR_THE_SPACE = ("models/resnet50/model.keras", "tests/test_app.py", "runs/resnet50-1/history.csv",
                     "pneumo/__pycache__/hub.cpython-311.pyc", "pneumo/demo/panels.pyi", "batch_eval.py")


class RecordingApi:
    def __init__(self, files_on_space=(), fail_with=None):
        self.calls = []
        self.files_on_space = list(files_on_space)  # what an earlier deploy left
        self.fail_with = fail_with

    def create_repo(self, repo_id, **kwargs):
        if self.fail_with:
            raise self.fail_with
        self.calls.append(("create_repo", repo_id, kwargs))

    def add_space_variable(self, repo_id, key, value, **kwargs):
        self.calls.append(("add_space_variable", repo_id, {"key": key, "value": value, **kwargs}))

    def list_repo_files(self, repo_id, **kwargs):
        self.calls.append(("list_repo_files", repo_id, kwargs))
        return self.files_on_space

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", repo_id, {"operations": list(operations), **kwargs}))
        return SimpleNamespace(oid="d" * 40)

    def call(self, name):
        (kwargs,) = [kwargs for called, _, kwargs in self.calls if called == name]
        return kwargs

    def committed(self) -> dict[str, bytes | None]:
        """Path -> uploaded bytes (None for a deletion) of the one commit."""
        operations = self.call("create_commit")["operations"]
        return {op.path_in_repo: (op.path_or_fileobj if isinstance(op, CommitOperationAdd) else None)
                for op in operations if isinstance(op, (CommitOperationAdd, CommitOperationDelete))}


@pytest.fixture
def tree(tmp_path):
    """A copy of the working tree's app, library and examples, the README above, and files that must stay off."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("app.py", "requirements.txt", "packages.txt"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "pneumo", root / "pneumo", ignore=shutil.ignore_patterns("__pycache__", "*.pyi"))
    shutil.copytree(REPO / "examples", root / "examples")
    (root / "README.md").write_text(README, encoding="utf-8")
    for path in NOT_FOR_THE_SPACE:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"not for the Space")
    return root


def space_paths(root) -> set[str]:
    """What a Space runs on, listed independently of pneumo.hub.commands's patterns."""
    library = {p.relative_to(root).as_posix() for p in (root / "pneumo").rglob("*.py") if "__pycache__" not in p.parts}
    examples = {f"examples/{p.name}" for p in (root / "examples").glob("*.jpeg")}
    return {"app.py", "requirements.txt", "packages.txt", "README.md", "examples/README.md", *library, *examples}


def committed_readme(api) -> SpaceCard:
    return SpaceCard(api.committed()["README.md"].decode())


def test_the_commit_holds_the_app_the_library_the_examples_and_a_readme(tree):
    api = RecordingApi()
    result = deploy_space(SPACE, MODELS, root=tree, api=api)
    committed = api.committed()
    assert set(committed) == space_paths(tree)
    assert {"pneumo/hub/commands.py", "pneumo/networks/cnn_lstm.py", "examples/normal_IM-0039-0001.jpeg"} <= set(committed)
    assert not any(path.startswith(("models/", "tests/", "runs/")) for path in committed)
    assert committed["app.py"] == str(tree / "app.py")  # uploaded from the working tree, not from a copy
    assert api.call("create_repo") == {"repo_type": "space", "space_sdk": "gradio", "private": False, "exist_ok": True}
    assert api.call("create_commit")["repo_type"] == "space" and result["commit"] == "d" * 40


def test_the_space_readme_names_the_model_repos_and_preloads_their_files(tree):
    api = RecordingApi()
    deploy_space(SPACE, MODELS, root=tree, api=api)
    card = committed_readme(api)
    assert (card.data.sdk, card.data.app_file, card.data.title) == ("gradio", "app.py", "pneumo")
    assert card.data.models == MODELS
    preloads = [line.split(" ") for line in card.data.preload_from_hub]
    assert [repo_id for repo_id, _ in preloads] == MODELS
    assert all(set(files.split(",")) == MODEL_FILES for _, files in preloads)
    assert "OWNER/" not in str(card) and "What the demo does" in card.text


def test_the_space_variables_point_the_app_at_the_model_repos_before_the_commit(tree):
    api = RecordingApi()
    result = deploy_space(SPACE, MODELS, root=tree, api=api)
    variables = {kwargs["key"]: kwargs["value"] for name, repo_id, kwargs in api.calls if name == "add_space_variable"}
    assert variables == VARIABLES == result["variables"]
    # Set first, so that the build the commit starts already loads the published models.
    assert [name for name, _, _ in api.calls].index("create_commit") == len(api.calls) - 1


def test_a_repo_for_every_bundled_model_shows_them_all(tree):
    repo_ids = [f"owner/pneumo-{n}" for n in range(len(BUNDLED_MODELS))]
    plan = deploy_space(SPACE, repo_ids, dry_run=True, root=tree, api=RecordingApi())
    assert plan["variables"] == {**{variable: repo_id for (variable, _), repo_id
                                    in zip(BUNDLED_MODELS.values(), repo_ids)},
                                 "PNEUMO_MODELS": ",".join(BUNDLED_MODELS)}


def test_the_app_on_the_space_loads_the_models_its_variables_name(monkeypatch):
    monkeypatch.setenv("PNEUMO_MODELS", VARIABLES["PNEUMO_MODELS"])
    monkeypatch.delenv("PNEUMO_CNN_LSTM_MODEL", raising=False)
    monkeypatch.setenv("PNEUMO_RESNET50_MODEL", MODELS[1])
    assert model_references() == {"CNN+LSTM": str(BUNDLED_MODELS["CNN+LSTM"][1]), "ResNet50": MODELS[1]}
    monkeypatch.setenv("PNEUMO_MODELS", "ResNet50, CNN+LSTM")  # the bundled order, whatever the listed one
    assert list(model_references()) == ["CNN+LSTM", "ResNet50"]
    monkeypatch.setenv("PNEUMO_MODELS", "CNN+LSTM,VGG16")
    with pytest.raises(ModelLoadError, match="PNEUMO_MODELS names VGG16"):
        model_references()


def test_a_space_missing_a_bundled_folder_says_how_to_point_at_it_or_leave_it_out(monkeypatch, tmp_path):
    from pneumo.hub import bundled
    from pneumo.hub.bundled import load_models

    variable, _ = BUNDLED_MODELS["ResNet50"]
    monkeypatch.setitem(bundled.BUNDLED_MODELS, "ResNet50", (variable, tmp_path / "resnet50"))
    with pytest.raises(ModelLoadError, match=f"set {variable} to the ResNet50's Hub repo, or PNEUMO_MODELS to the "
                                             r"models to load \(e.g. CNN\+LSTM\)"):
        # The missing one first: the message names the others, and no network is loaded in vain.
        load_models({"ResNet50": str(tmp_path / "resnet50"), "CNN+LSTM": str(BUNDLED_MODELS["CNN+LSTM"][1])})


def test_files_an_earlier_deploy_left_are_deleted_in_the_same_commit(tree):
    left = ["pneumo/hub/commands.py", "pneumo/old_module.py", "pneumo/networks/old_arch.py", "examples/old.jpeg",
            ".gitattributes", "README.md", "notes/kept.md"]
    api = RecordingApi(files_on_space=left)
    result = deploy_space(SPACE, MODELS, root=tree, api=api)
    deleted = {path for path, data in api.committed().items() if data is None}
    assert deleted == {"pneumo/old_module.py", "pneumo/networks/old_arch.py", "examples/old.jpeg"}
    assert result["deleted"] == sorted(deleted)


def test_a_new_space_can_be_private(tree):
    api = RecordingApi()
    deploy_space(SPACE, MODELS, private=True, root=tree, api=api)
    assert api.call("create_repo")["private"] is True


def test_dry_run_returns_the_plan_and_makes_no_call(tree):
    api = RecordingApi()
    plan = deploy_space(SPACE, MODELS, dry_run=True, root=tree, api=api)
    assert api.calls == []
    assert {entry["path"] for entry in plan["files"]} == space_paths(tree) and "commit" not in plan
    assert all(entry["bytes"] > 0 for entry in plan["files"])
    assert plan["variables"] == VARIABLES and plan["front_matter"]["models"] == MODELS


@pytest.mark.parametrize("space_id, models, complaint", [
    (SPACE, [], f"give 1 to {len(BUNDLED_MODELS)} model repos"),
    (SPACE, [*MODELS, *(f"owner/extra-{n}" for n in range(len(BUNDLED_MODELS)))],
     f"give 1 to {len(BUNDLED_MODELS)} model repos"),
    (SPACE, [MODELS[0], "pneumo-resnet50"], "OWNER/NAME"),
    (SPACE, [MODELS[0], "owner/pneumo-resnet50@v1"], "not a Hub repo id"),
    (SPACE, [MODELS[0], ""], "not a Hub repo id"),
    ("owner/pneumo--demo", MODELS, "not a Hub repo id for the Space"),
    ("pneumo-demo", MODELS, "not a Hub repo id for the Space"),
])
def test_bad_arguments_are_refused_before_any_call(tree, space_id, models, complaint):
    api = RecordingApi()
    with pytest.raises(SpaceDeployError, match=complaint):
        deploy_space(space_id, models, root=tree, api=api)
    assert api.calls == []


@pytest.mark.parametrize("missing", ["app.py", "requirements.txt", "README.md", "examples/*.jpeg", "pneumo"])
def test_a_file_missing_from_the_working_tree_is_refused_before_any_call(tree, missing):
    for path in tree.glob(missing):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    api = RecordingApi()
    with pytest.raises(SpaceDeployError, match="not in the working tree"):
        deploy_space(SPACE, MODELS, root=tree, api=api)
    assert api.calls == []


def test_a_rejected_token_says_to_set_hf_token(tree):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    response = httpx2.Response(403, request=httpx2.Request("POST", "http://127.0.0.1/api/repos/create"))
    with pytest.raises(SpaceDeployError, match="HF_TOKEN"):
        deploy_space(SPACE, MODELS, root=tree, api=RecordingApi(fail_with=HfHubHTTPError("403", response=response)))


def deploy(*args, cwd=REPO, env=None):
    """`pneumo hub deploy-space ARGS...`, run from `cwd` (the working tree it deploys)."""
    return subprocess.run([sys.executable, "-m", "pneumo", "hub", "deploy-space", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_command_line_dry_run_plans_the_working_tree():
    result = deploy(SPACE, "--models", ",".join(MODELS), "--dry-run")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert {entry["path"] for entry in plan["files"]} == space_paths(REPO)
    assert plan["variables"] == VARIABLES


def test_an_unreachable_hub_is_one_line_not_a_traceback(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = deploy(SPACE, "--models", ",".join(MODELS),
                    env=client_env(f"http://127.0.0.1:{port}", tmp_path / "hf", token="hf_test"))
    assert result.returncode == 1
    assert "cannot be reached" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# Over HTTP: the command, run in a copy of the working tree, against the loopback Hub.

@pytest.fixture
def hub():
    with LoopbackHub(write_token="hf_write") as server:
        yield server


def deploy_to(hub, tree, *args, token="hf_write"):
    return deploy(SPACE, "--models", ",".join(MODELS), *args, cwd=tree,
                  env=client_env(hub.url, tree.parent / "hf", token=token))


def test_a_deploy_lands_the_files_and_the_variables_on_the_hub(hub, tree):
    result = deploy_to(hub, tree)
    assert result.returncode == 0, result.stderr
    space = hub.spaces[SPACE]
    assert space.created_with["type"] == "space" and space.created_with["sdk"] == "gradio"
    assert space.branches["main"] == json.loads(result.stdout)["commit"]
    stored = space.files()
    assert set(stored) == space_paths(tree) | {".gitattributes"}
    assert all(stored[path] == (tree / path).read_bytes() for path in space_paths(tree) - {"README.md"})
    assert SpaceCard(stored["README.md"].decode()).data.models == MODELS
    assert {key: variable["value"] for key, variable in space.variables.items()} == VARIABLES


def test_a_redeploy_deletes_what_the_working_tree_no_longer_has(hub, tree):
    assert deploy_to(hub, tree).returncode == 0
    (tree / "examples" / "normal_IM-0039-0001.jpeg").unlink()
    (tree / "pneumo" / "demo" / "panels.py").rename(tree / "pneumo" / "demo" / "page.py")  # a module the deploy itself does not import
    result = deploy_to(hub, tree)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["deleted"] == ["examples/normal_IM-0039-0001.jpeg", "pneumo/demo/panels.py"]
    assert set(hub.spaces[SPACE].files()) == space_paths(tree) | {".gitattributes"}


def test_redeploying_an_unchanged_tree_makes_no_new_commit(hub, tree):
    first = deploy_to(hub, tree)
    again = deploy_to(hub, tree)
    assert again.returncode == 0, again.stderr
    head = hub.spaces[SPACE].branches["main"]
    assert json.loads(again.stdout)["commit"] == json.loads(first.stdout)["commit"] == head
    assert len(hub.spaces[SPACE].commits) == 2  # the Space's first commit and the deploy


def test_a_token_without_write_access_says_to_set_hf_token(hub, tree):
    result = deploy_to(hub, tree, token="hf_read_only")
    assert result.returncode == 1 and "HF_TOKEN" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and hub.spaces == {}
