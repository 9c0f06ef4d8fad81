"""The model folder module: its files written whole, config checked on reading, the test-scoring log."""

import json
import shutil

import pandas as pd
import pytest

from pneumo.hub import model_folder
from pneumo.errors import ModelLoadError

from conftest import png_bytes, synthetic_xray


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
    (folder / "pneumo.json").write_text(content)
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


def test_the_model_hash_covers_the_weights(folder):
    before = model_folder.model_file_sha256(folder)
    weights = folder / model_folder.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert model_folder.model_file_sha256(folder) != before


def test_publishing_lists_the_documenting_files_and_never_checkpoints(tiny_model_folder):
    names = [path.name for path in model_folder.files_to_publish(tiny_model_folder)]
    assert {"pneumo.json", "config.json", "metadata.json", "model.weights.h5", "README.md", "metrics_validation.json",
            "data_split.csv"} <= set(names)
    assert "checkpoints" not in names and "train_args.json" not in names


def test_keras_own_loader_reads_the_folder(tiny_model_folder):
    """What the Hub's "Use this model" snippet does with a published repo, on the local folder."""
    import keras

    model = keras.saving.load_model(tiny_model_folder, compile=False, safe_mode=True)
    assert model.output_shape == (None, 2)


def test_a_legacy_folder_loads_and_predicts_as_its_source(tiny_model_folder, legacy_model_folder):
    from pneumo.prediction.predictor import Predictor

    assert model_folder.is_legacy(legacy_model_folder) and not model_folder.is_legacy(tiny_model_folder)
    image = png_bytes(synthetic_xray(96, seed=3, opacity=True))
    legacy = Predictor.from_folder(legacy_model_folder).predict_file(image)
    current = Predictor.from_folder(tiny_model_folder).predict_file(image)
    assert legacy.probabilities == pytest.approx(current.probabilities, abs=1e-6)


def test_a_legacy_config_is_written_back_where_it_was(legacy_model_folder, tmp_path):
    copy = shutil.copytree(legacy_model_folder, tmp_path / "legacy")
    config = model_folder.read_config(copy)
    model_folder.write_config(copy, {**config, "threshold": 0.3})
    assert not (copy / "pneumo.json").exists() and json.loads((copy / "config.json").read_text())["threshold"] == 0.3


def test_publishing_a_legacy_folder_asks_for_an_upgrade(legacy_model_folder):
    with pytest.raises(ModelLoadError, match="pneumo model-folder upgrade"):
        model_folder.files_to_publish(legacy_model_folder)


def test_upgrade_rewrites_a_legacy_folder_in_the_keras_layout(legacy_model_folder, tmp_path, capsys):
    from pneumo.prediction.predictor import Predictor

    copy = shutil.copytree(legacy_model_folder, tmp_path / "legacy")
    image = png_bytes(synthetic_xray(96, seed=4))
    before = Predictor.from_folder(copy).predict_file(image).probabilities
    assert model_folder.main(["upgrade", str(copy)]) == 0
    assert "upgraded" in capsys.readouterr().out
    assert not (copy / "model.keras").exists() and not model_folder.is_legacy(copy)
    assert "model_file" not in json.loads((copy / "pneumo.json").read_text())
    assert Predictor.from_folder(copy).predict_file(image).probabilities == pytest.approx(before, abs=1e-6)
    assert model_folder.upgrade(copy) is False


def test_the_about_table_survives_a_missing_metric(folder):
    from pneumo.demo.panels import models_table
    from pneumo.prediction.predictor import Predictor

    metrics = json.loads((folder / "metrics_validation.json").read_text())
    metrics["specificity"] = None
    model_folder.write_metrics(folder, "validation", metrics)
    header, _, validation, test = [[cell.strip() for cell in row.strip("|").split("|")]
                                   for row in models_table({"Tiny": Predictor.from_folder(folder)}).splitlines()]
    assert validation[header.index("Specificity")] == "n/a" and validation[header.index("Accuracy")] != "n/a"
    assert test[header.index("Split (images)")] == "test" and set(test[header.index("Accuracy"):]) == {"n/a"}
