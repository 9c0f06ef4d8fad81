"""The ensemble evidence: members on one data split, each alone and every mean of two or more, on the
criterion the models were chosen on; and the ensemble folder `--write` makes, as the library and
`batch_eval.py` use it."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import batch_eval
from conftest import assert_operating_points_fitted_on_validation, copy_with_threshold
from pneumo import load_predictor
from pneumo.hub import model_folder
from pneumo.prediction.calibration import Calibration
from pneumo.training.ensemble import combination_table, main, member_scores
from pneumo.prediction.ensemble_predictor import EnsemblePredictor
from pneumo.errors import DataFolderError, ModelLoadError
from pneumo.prediction.predictor import Predictor


@pytest.fixture(scope="module")
def twin(tiny_model_folder, tmp_path_factory):
    """The tiny model under another name: the same network, so any mean of the two is the model itself."""
    return copy_with_threshold(tiny_model_folder, tmp_path_factory.mktemp("twin") / "twin", "twin", 0.5)


def test_a_mean_of_identical_members_scores_like_each_member(tiny_model_folder, twin, synthetic_dataset):
    labels, probabilities = member_scores([tiny_model_folder, twin], synthetic_dataset)
    assert set(probabilities) == {"tiny-cnn-lstm", "twin"}
    table = combination_table(labels, probabilities).set_index("members")
    assert list(table["size"].sort_values()) == [1, 1, 2]
    assert table.loc["tiny-cnn-lstm + twin", "criterion"] == pytest.approx(table.loc["twin", "criterion"], abs=1e-9)
    # Each member is scored on the criterion as its training scored the epoch it kept (the calibration, which
    # training did not have, keeps the order of the probabilities, and the criterion depends on nothing else).
    history = pd.read_csv(tiny_model_folder / "history.csv")
    kept = history.loc[history.val_criterion.idxmax()]  # the first best epoch: a later tie is not saved
    assert table.loc["twin", "criterion"] == pytest.approx(kept.val_criterion, abs=1e-9)
    assert table.loc["twin", "clean_auc"] == pytest.approx(kept.val_auc, abs=1e-6)


def test_the_mean_is_taken_per_image():
    labels = {"clean": np.array([0, 0, 1, 1]), "perturbed": np.array([0, 0, 1, 1])}
    # Each member ranks one normal image above a pneumonia image; their mean ranks every image right.
    probabilities = {"a": {"clean": np.array([0.1, 0.6, 0.5, 0.9]), "perturbed": np.array([0.1, 0.6, 0.5, 0.9])},
                     "b": {"clean": np.array([0.6, 0.1, 0.9, 0.5]), "perturbed": np.array([0.6, 0.1, 0.9, 0.5])}}
    table = combination_table(labels, probabilities).set_index("members")
    assert table.loc["a + b", "clean_auc"] == pytest.approx(1.0)
    assert table.loc["a", "clean_auc"] == pytest.approx(0.75)
    assert table.index[0] == "a + b"  # the best first


def test_members_trained_on_other_splits_are_refused(tiny_model_folder, twin, tmp_path, synthetic_dataset):
    other = copy_with_threshold(twin, tmp_path / "other", "other", 0.5)
    split = pd.read_csv(other / "data_split.csv")
    split.loc[0, "split"] = "validation" if split.loc[0, "split"] == "train" else "train"
    split.to_csv(other / "data_split.csv", index=False)
    with pytest.raises(DataFolderError, match="another data split"):
        member_scores([tiny_model_folder, other], synthetic_dataset)


def test_the_command_writes_the_table_and_says_whether_all_models_beat_the_best(tiny_model_folder, twin,
                                                                                synthetic_dataset, tmp_path, capsys):
    out = tmp_path / "ensemble.csv"
    assert main([str(tiny_model_folder), str(twin), "--data", str(synthetic_dataset), "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 3
    assert "does not beat the best single model" in capsys.readouterr().out  # identical members cannot


@pytest.fixture(scope="module")
def ensemble_folder(tiny_model_folder, row_lstm_folder, synthetic_dataset, tmp_path_factory):
    """The ensemble of two members that differ in input size (64 and 24 px) and heatmap method, side by side
    with them (as models/ would hold it)."""
    models = tmp_path_factory.mktemp("ensemble-models")
    members = [shutil.copytree(folder, models / folder.name, ignore=shutil.ignore_patterns("checkpoints"))
               for folder in (tiny_model_folder, row_lstm_folder)]
    out = models / "tiny-ensemble"
    assert main([*map(str, members), "--data", str(synthetic_dataset), "--write", str(out)]) == 0
    return out


def validation_images(folder, data_root) -> list:
    split = pd.read_csv(folder / model_folder.SPLIT_FILE)
    return [data_root / path for path in split[split.split == model_folder.VALIDATION_SPLIT].path]


def test_the_written_folder_names_its_members_their_weights_and_its_own_fit(ensemble_folder, synthetic_dataset):
    config = json.loads((ensemble_folder / model_folder.CONFIG_FILE).read_text())
    assert config["kind"] == "ensemble"
    assert [member["folder"] for member in config["members"]] == ["../tiny-cnn-lstm", "../tiny-row-lstm"]
    for member in config["members"]:
        assert member["model_sha256"] == model_folder.model_file_sha256(ensemble_folder / member["folder"])
    assert config["calibration"]["fitted_on"] == "validation split"
    metrics = model_folder.read_metrics(ensemble_folder, "validation")
    assert metrics["n_images"] == len(validation_images(ensemble_folder, synthetic_dataset))
    card = (ensemble_folder / model_folder.CARD_FILE).read_text()
    assert "tiny-cnn-lstm" in card and "tiny-row-lstm" in card and "Validation" in card
    with pytest.raises(ModelLoadError, match="an ensemble"):
        Predictor.from_folder(ensemble_folder)  # single-model readers say what it is


def test_an_ensembles_operating_points_are_fitted_on_its_calibrated_validation_probabilities(ensemble_folder,
                                                                                            synthetic_dataset):
    assert_operating_points_fitted_on_validation(load_predictor(ensemble_folder), synthetic_dataset)


def test_an_ensemble_predicts_the_recalibrated_mean_of_its_members(ensemble_folder, synthetic_dataset):
    ensemble = load_predictor(ensemble_folder)
    assert isinstance(ensemble, EnsemblePredictor) and [m.name for m in ensemble.members] == ["tiny-cnn-lstm",
                                                                                              "tiny-row-lstm"]
    calibration = Calibration.from_config(ensemble.config["calibration"])
    for path in validation_images(ensemble_folder, synthetic_dataset)[:4]:
        alone = [member.predict_file(path) for member in ensemble.members]
        mean = np.mean([prediction.positive_probability for prediction in alone])
        expected = calibration.probabilities(np.log([[1 - mean, mean]]))[0, 1]
        prediction = ensemble.predict_file(path)
        assert prediction.positive_probability == pytest.approx(expected, abs=1e-5)
        assert prediction.label == ("PNEUMONIA" if expected >= ensemble.threshold else "NORMAL")
        assert prediction.ood_score == pytest.approx(np.mean([p.ood_score for p in alone]), rel=1e-4)


def test_an_ensembles_heatmap_is_its_members_mean_on_the_largest_input(ensemble_folder, synthetic_dataset):
    ensemble = load_predictor(ensemble_folder)
    image = ensemble.load_image(validation_images(ensemble_folder, synthetic_dataset)[0])
    prediction, heatmap = ensemble.predict_and_explain(image)
    assert heatmap.shape == (64, 64) and heatmap.min() >= 0 and heatmap.max() == pytest.approx(1.0)
    assert prediction.positive_probability == pytest.approx(ensemble.predict_image(image).positive_probability,
                                                            abs=1e-5)
    assert "Grad-CAM" in ensemble.explanation_method and "integrated gradients" in ensemble.explanation_method


def test_batch_eval_scores_an_ensemble_from_its_members_as_it_would_afresh(ensemble_folder, synthetic_dataset,
                                                                          tmp_path):
    members = [ensemble_folder.parent / name for name in ("tiny-cnn-lstm", "tiny-row-lstm")]
    together, alone = tmp_path / "together", tmp_path / "alone"
    quick = ["--no-figures", "--no-intervals"]  # this test reads predictions only
    assert batch_eval.main([str(synthetic_dataset / "train"), "--out", str(together), "--model", str(members[0]),
                            "--model", str(members[1]), "--model", str(ensemble_folder), *quick]) == 0
    assert batch_eval.main([str(synthetic_dataset / "train"), "--out", str(alone), "--model",
                            str(ensemble_folder), *quick]) == 0
    derived = pd.read_csv(together / "tiny-ensemble" / "predictions.csv")
    scored = pd.read_csv(alone / "tiny-ensemble" / "predictions.csv")
    assert len(derived) == 48 and list(derived.file) == list(scored.file)
    assert np.allclose(derived.probability_pneumonia, scored.probability_pneumonia, atol=1e-5)
    assert list(pd.read_csv(together / "comparison.csv").model) == ["tiny-cnn-lstm", "tiny-row-lstm", "tiny-ensemble"]


def test_an_ensemble_refuses_members_whose_weights_are_not_the_ones_it_was_fitted_with(ensemble_folder,
                                                                                       tiny_model_folder, tmp_path):
    models = shutil.copytree(ensemble_folder.parent, tmp_path / "models")
    model_folder.save_network(model_folder.load_network(models / "tiny-row-lstm"), models / "tiny-cnn-lstm")
    with pytest.raises(ModelLoadError, match="not the ones the ensemble was fitted with"):
        load_predictor(models / "tiny-ensemble")
    # Loaded predictors with the fitted weights are reused wherever they come from.
    original = Predictor.from_folder(tiny_model_folder)
    ensemble = EnsemblePredictor.from_folder(models / "tiny-ensemble", loaded=[original])
    assert ensemble.members[0] is original


def test_writing_over_a_folder_that_is_not_an_ensemble_is_refused(tiny_model_folder, twin, synthetic_dataset,
                                                                  capsys):
    assert main([str(tiny_model_folder), str(twin), "--data", str(synthetic_dataset), "--write", str(twin)]) == 1
    assert "not an ensemble folder" in capsys.readouterr().err


def test_an_ensembles_test_scoring_is_logged_with_the_hash_of_its_fit(ensemble_folder, synthetic_dataset, tmp_path):
    from pneumo.training.evaluate import main as evaluate

    copy = shutil.copytree(ensemble_folder.parent, tmp_path / "models") / ensemble_folder.name
    assert evaluate([str(copy), "--data", str(synthetic_dataset / "train"), "--split", "test"]) == 0
    log = pd.read_csv(copy / model_folder.SCORING_LOG)
    assert list(log.model_sha256) == [model_folder.model_file_sha256(copy)] and list(log.n_images) == [48]
    assert "Official test set" in (copy / model_folder.CARD_FILE).read_text()
    # A refit drops the earlier fit's test metrics and keeps its logged scoring.
    members = [str(copy.parent / name) for name in ("tiny-row-lstm", "tiny-cnn-lstm")]
    assert main([*members, "--data", str(synthetic_dataset), "--write", str(copy)]) == 0
    assert model_folder.read_metrics(copy, "test") is None and len(pd.read_csv(copy / model_folder.SCORING_LOG)) == 1
    assert model_folder.model_file_sha256(copy) != log.model_sha256[0]


def test_commands_that_need_one_network_refuse_an_ensemble_and_say_so(ensemble_folder, synthetic_dataset, tmp_path,
                                                                      capsys):
    from pneumo.site.refit import main as calibrate
    from pneumo.training.robustness import main as robustness

    assert calibrate([str(ensemble_folder), "--data", str(synthetic_dataset / "train"),
                      "--out", str(tmp_path / "site")]) == 1
    assert robustness([str(ensemble_folder), "--data", str(synthetic_dataset)]) == 1
    errors = capsys.readouterr().err
    assert "pneumo calibrate" in errors and "pneumo robustness" in errors and errors.count("ensemble") >= 2
    assert not (tmp_path / "site").exists()


def test_an_ensemble_gets_a_site_operating_point_without_labels(ensemble_folder, synthetic_dataset, tmp_path, capsys):
    from conftest import write_synthetic_class_folders

    from pneumo.site.adapt import main

    folder = tmp_path / "models" / "tiny-ensemble"
    shutil.copytree(ensemble_folder.parent, tmp_path / "models")
    assert main([str(folder), "--fit-source", str(synthetic_dataset)]) == 0
    assert model_folder.read_ensemble_config(folder)["site_reference"]["released"]["images"] > 0
    site = tmp_path / "site"
    write_synthetic_class_folders(site, 60, seed=21)
    out = tmp_path / "models" / "tiny-ensemble-site"
    assert main([str(folder), "--images", str(site), "--out", str(out)]) == 0
    assert "batch-norm step not taken (an ensemble (adapt its members))" in capsys.readouterr().out
    adapted = load_predictor(str(out))
    record = adapted.config["site_adaptation"]
    assert record["image_count"] == 120 and record["source_model_sha256"] is None
    assert adapted.threshold == (record["operating_point"]["threshold"] if record["operating_point"]["verdict"]
                                 == "trusted" else record["operating_point"]["threshold_without_it"])
    assert 0 <= adapted.predict_file(next(site.rglob("*.png"))).positive_probability <= 1


def test_batch_eval_adapt_leaves_an_ensemble_whose_members_it_adapts_as_it_is(ensemble_folder, tmp_path, capsys):
    from conftest import write_synthetic_class_folders

    site = tmp_path / "site"
    write_synthetic_class_folders(site, 50, seed=23)
    member = ensemble_folder.parent / "tiny-cnn-lstm"
    assert batch_eval.main([str(site), "--out", str(tmp_path / "out"), "--model", str(member), "--model",
                            str(ensemble_folder), "--adapt", "--no-figures", "--no-intervals"]) == 0
    said = capsys.readouterr().err
    assert "tiny-ensemble: not adapted (its members tiny-cnn-lstm are adapted here" in said
