"""A model reference that means a local path is a folder or an error saying there is no such folder, never a Hub
download; one that could be either says both when it fails; and batch_eval.py calls a model it cannot load
bad usage (exit status 2)."""

import json
import re
import shutil

import pytest

import batch_eval
from pneumo import load_predictor
from pneumo.hub import loading
from pneumo.errors import ModelLoadError, ModelNotFoundError
from pneumo.hub.repos import is_hub_reference


@pytest.fixture
def in_a_checkout(tmp_path, monkeypatch):
    """A working folder like the repository's: models/cnn-lstm is a model folder, pneumo/ is code."""
    (tmp_path / "models" / "cnn-lstm").mkdir(parents=True)
    (tmp_path / "models" / "cnn-lstm" / "pneumo.json").write_text("{}")
    (tmp_path / "pneumo").mkdir()
    (tmp_path / "pneumo" / "imaging.py").write_text("")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def no_hub(monkeypatch):
    """Any attempt to reach the Hub fails the test."""
    def reached(reference, revision=None):
        raise AssertionError(f"{reference} was looked up on the Hub")

    monkeypatch.setattr(loading, "resolve_model_folder", reached)


@pytest.mark.parametrize("reference", ["./cnn-lstm", "../cnn-lstm", "/srv/models/cnn-lstm", "~/cnn-lstm",
                                       "models/new/cnn-lstm", "models/cnn-lsm", "models/cnn-lsm@v1"])
def test_a_reference_that_means_a_local_path_is_never_a_hub_repo(in_a_checkout, reference):
    assert not is_hub_reference(reference)


@pytest.mark.parametrize("reference", ["owner/cnn-lstm", "pneumo/tiny", "owner/name@refs/pr/1"])
def test_owner_name_is_a_hub_repo_when_its_owner_is_no_folder_of_models(in_a_checkout, reference):
    assert is_hub_reference(reference)


@pytest.mark.parametrize("reference", ["models/cnn-lsm", "./cnn-lstm", "models/new/cnn-lstm", "~/no-such-model"])
def test_a_missing_local_folder_is_no_such_model_folder_without_asking_the_hub(in_a_checkout, no_hub, reference):
    with pytest.raises(ModelNotFoundError, match=f"^{re.escape(reference)}: no such model folder"):
        load_predictor(reference)


def test_a_mistyped_folder_of_models_suggests_the_close_one(in_a_checkout, no_hub):
    with pytest.raises(ModelNotFoundError, match="did you mean models/cnn-lstm"):
        load_predictor("models/cnn-lsm")


def test_a_reference_that_could_be_either_says_both_when_the_hub_fails(in_a_checkout, monkeypatch):
    def not_on_the_hub(reference, revision=None):
        raise ModelNotFoundError(f"{reference}: no such model repo on the Hub")

    monkeypatch.setattr(loading, "resolve_model_folder", not_on_the_hub)
    with pytest.raises(ModelNotFoundError) as raised:
        load_predictor("owner/cnn-lstm")
    message = str(raised.value)
    assert "no such model folder here" in message and "no such model repo on the Hub" in message


def test_a_malformed_hub_repo_id_is_model_not_found():
    with pytest.raises(ModelNotFoundError, match="not a Hub repo id"):
        load_predictor("owner/bad..name")


@pytest.fixture
def malformed_model(tiny_model_folder, tmp_path):
    """The tiny model whose pneumo.json names an intensity normalisation pneumo does not know."""
    folder = shutil.copytree(tiny_model_folder, tmp_path / "malformed", ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((folder / "pneumo.json").read_text())
    config["preprocessing"]["intensity"] = {"method": "sharpen_everything"}
    (folder / "pneumo.json").write_text(json.dumps(config))
    return folder


def test_a_pneumo_json_that_does_not_describe_a_usable_model_is_a_load_error(malformed_model):
    with pytest.raises(ModelLoadError, match="sharpen_everything") as raised:
        load_predictor(str(malformed_model))
    assert str(malformed_model) in str(raised.value)


@pytest.mark.parametrize("model", ["owner/bad..name", "{tmp}/models/cnn-lsm", "{malformed}"])
def test_batch_eval_calls_a_model_it_cannot_load_bad_usage(model, malformed_model, tmp_path, capsys):
    (tmp_path / "models" / "cnn-lstm").mkdir(parents=True)
    (tmp_path / "images").mkdir()
    model = model.format(tmp=tmp_path, malformed=malformed_model)
    with pytest.raises(SystemExit) as exit_status:
        batch_eval.main([str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--model", model])
    assert exit_status.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("batch_eval.py: error: ") and model in error


def test_a_ray_worker_that_cannot_load_its_model_passes_on_a_load_error():
    """Ray passes a worker's exception on as the text of its traceback; a model that a node cannot load (its
    folder missing there) comes back as a ModelLoadError, any other pneumo error as a PneumoError."""
    from pneumo.batch.ray_engine import pneumo_error_of
    from pneumo.errors import PneumoError

    def worker_failure(last_line):
        return RuntimeError(f"ray::Scorer.__init__()\nTraceback (most recent call last):\n  ...\n{last_line}")

    missing = pneumo_error_of(worker_failure("pneumo.errors.ModelNotFoundError: /srv/tiny: no such model folder"))
    assert isinstance(missing, ModelLoadError) and str(missing) == "on a Ray worker: /srv/tiny: no such model folder"
    other = pneumo_error_of(worker_failure("pneumo.errors.DataFolderError: /data: no files to score"))
    assert type(other) is PneumoError
    assert pneumo_error_of(worker_failure("ZeroDivisionError: division by zero")) is None


def test_batch_eval_calls_a_model_load_error_while_scoring_bad_usage(tiny_model_folder, tmp_path, monkeypatch, capsys):
    from pneumo.batch import scoring

    def a_node_without_the_model(*args, **kwargs):
        raise ModelLoadError("on a Ray worker: /srv/tiny: no such model folder")

    monkeypatch.setattr(scoring, "run_folder", a_node_without_the_model)
    (tmp_path / "images").mkdir()
    with pytest.raises(SystemExit) as exit_status:
        batch_eval.main([str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--model", str(tiny_model_folder)])
    assert exit_status.value.code == 2 and "no such model folder" in capsys.readouterr().err
