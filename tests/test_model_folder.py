"""The model folder module: its files written whole, config checked on reading, the test-scoring log."""

import json
import shutil

import pandas as pd
import pytest

from pneumo import model_folder
from pneumo.errors import ModelLoadError


@pytest.fixture
def folder(tiny_model_folder, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_folder, copy, ignore=shutil.ignore_patterns("checkpoints"))
    return copy


def test_config_round_trips_and_leaves_no_temporary_file(folder):
    config = model_folder.read_config(folder)
    config["threshold"] = 0.25
    model_folder.write_config(folder, config)
    assert model_folder.read_config(folder)["threshold"] == 0.25
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("content, words", [("{not json", "not valid JSON"), ('{"architecture": "x"}', "missing")])
def test_a_broken_config_is_a_model_load_error(folder, content, words):
    (folder / "config.json").write_text(content)
    with pytest.raises(ModelLoadError, match=words):
        model_folder.read_config(folder)


def test_metrics_are_read_by_split(folder):
    model_folder.write_metrics(folder, "test", {"n_images": 3, "accuracy": 1.0})
    assert list(model_folder.read_all_metrics(folder)) == ["validation", "test"]
    assert model_folder.read_metrics(folder, "test")["n_images"] == 3
    assert model_folder.read_metrics(folder, "nowhere") is None


def test_every_test_scoring_is_logged_with_the_model_files_hash(folder):
    for accuracy in (0.8, 0.9):
        model_folder.log_test_scoring(folder, {"n_images": 624, "accuracy": accuracy}, "chest_xray/test")
    log = pd.read_csv(folder / model_folder.SCORING_LOG)
    assert list(log.accuracy) == [0.8, 0.9]
    assert set(log.model_sha256) == {model_folder.model_file_sha256(folder)} and len(log.model_sha256[0]) == 64


def test_publishing_lists_the_documenting_files_and_never_checkpoints(tiny_model_folder):
    names = [path.name for path in model_folder.files_to_publish(tiny_model_folder)]
    assert {"config.json", "model.keras", "README.md", "metrics_validation.json", "data_split.csv"} <= set(names)
    assert "checkpoints" not in names and "train_args.json" not in names


def test_the_model_summary_survives_a_missing_metric(folder):
    from pneumo.demo import model_summary
    from pneumo.predictor import Predictor

    metrics = json.loads((folder / "metrics_validation.json").read_text())
    metrics["specificity"] = None
    model_folder.write_metrics(folder, "validation", metrics)
    assert "specificity n/a" in model_summary(Predictor.from_folder(folder))
