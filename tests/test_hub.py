"""Model references: local folders, and Hub repos read from the standard cache (the Hub itself is unreachable)."""

import json
import shutil

import pytest

from pneumo import load_predictor
from pneumo.errors import HubUnavailableError, ModelLoadError, ModelNotFoundError
from pneumo.hub.repos import is_hub_reference, split_reference

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_model_folder):
    """An HF cache holding `pneumo/tiny` at COMMIT (refs/main -> COMMIT), as a past download leaves it."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    repo = cache / "models--pneumo--tiny"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name in ("pneumo.json", "config.json", "metadata.json", "model.weights.h5", "ood_reference.npz", "README.md",
                 "metrics_validation.json"):
        shutil.copy(tiny_model_folder / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert huggingface_hub.constants.HF_HUB_OFFLINE  # set by conftest: nothing may reach the real Hub
    return cache


@pytest.mark.parametrize("reference, expected", [
    ("owner/name", ("owner/name", None)),
    ("owner/name@v1.0", ("owner/name", "v1.0")),
    (f"owner/name@{COMMIT}", ("owner/name", COMMIT)),
])
def test_split_reference(reference, expected):
    assert split_reference(reference) == expected
    assert is_hub_reference(reference)


def test_a_local_path_is_not_a_hub_reference(tiny_model_folder):
    assert not is_hub_reference(str(tiny_model_folder))
    assert not is_hub_reference("models/cnn-lstm/extra")


def test_a_cached_repo_loads_offline_and_records_its_commit(hub_cache):
    predictor = load_predictor("pneumo/tiny")
    assert predictor.revision == COMMIT
    assert predictor.reference == "pneumo/tiny"


def test_a_pinned_commit_loads_offline(hub_cache):
    assert load_predictor(f"pneumo/tiny@{COMMIT}").revision == COMMIT


def test_an_uncached_repo_offline_says_what_to_do(hub_cache):
    with pytest.raises(HubUnavailableError, match="not in the local cache"):
        load_predictor("pneumo/absent")


def test_an_uncached_revision_offline_is_a_clear_error(hub_cache):
    with pytest.raises(ModelLoadError, match="pneumo/tiny"):
        load_predictor("pneumo/tiny@v9")


def test_a_missing_folder_is_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such model folder"):
        load_predictor(str(tmp_path / "nothing"))


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="pneumo.json"):
        load_predictor(str(tmp_path))


def test_a_plain_keras_folder_without_pneumo_metadata_is_refused(tmp_path, tiny_model_folder):
    for name in ("config.json", "metadata.json", "model.weights.h5"):
        shutil.copy(tiny_model_folder / name, tmp_path / name)
    with pytest.raises(ModelLoadError, match="no pneumo.json"):
        load_predictor(str(tmp_path))


def test_a_config_that_is_not_pneumo_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="missing architecture"):
        load_predictor(str(tmp_path))


def test_missing_network_files_are_refused(tmp_path, tiny_model_folder):
    shutil.copy(tiny_model_folder / "pneumo.json", tmp_path / "pneumo.json")
    shutil.copy(tiny_model_folder / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelLoadError, match="metadata.json, model.weights.h5 is missing"):
        load_predictor(str(tmp_path))


def test_damaged_weights_are_refused(tmp_path, tiny_model_folder):
    for name in ("pneumo.json", "config.json", "metadata.json"):
        shutil.copy(tiny_model_folder / name, tmp_path / name)
    (tmp_path / "model.weights.h5").write_bytes(b"not an HDF5 file")
    with pytest.raises(ModelLoadError, match="cannot be loaded"):
        load_predictor(str(tmp_path))


def test_a_legacy_folder_without_its_model_file_is_refused(tmp_path, legacy_model_folder):
    shutil.copy(legacy_model_folder / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelLoadError, match="model.keras is missing"):
        load_predictor(str(tmp_path))


def test_a_damaged_legacy_model_file_is_refused(tmp_path, legacy_model_folder):
    shutil.copy(legacy_model_folder / "config.json", tmp_path / "config.json")
    (tmp_path / "model.keras").write_bytes(b"not a zip archive")
    with pytest.raises(ModelLoadError, match="cannot be loaded"):
        load_predictor(str(tmp_path))
