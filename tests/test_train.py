"""Training writes a complete, self-describing model folder, and resumes after an interruption."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_CNN_LSTM_OPTIONS, assert_operating_points_fitted_on_validation
from pneumo.hub import model_folder
from pneumo.networks import architecture_names
from pneumo.prediction.predictor import Predictor
from pneumo.training.train import main

MODEL_FOLDER_FILES = {"pneumo.json", "config.json", "metadata.json", "model.weights.h5", "README.md", "history.csv",
                      "training_curves.png", "metrics_validation.json", "data_split.csv"}


def test_training_writes_a_hub_style_model_folder(tiny_model_folder):
    assert MODEL_FOLDER_FILES <= {path.name for path in tiny_model_folder.iterdir()}


def test_config_says_everything_needed_to_use_the_model(tiny_model_folder):
    config = json.loads((tiny_model_folder / "pneumo.json").read_text())
    assert config["architecture"] == "cnn_lstm"
    assert config["input"] == {"height": 64, "width": 64, "channels": 3}
    assert config["class_names"] == ["NORMAL", "PNEUMONIA"] and config["positive_class"] == "PNEUMONIA"
    assert config["calibration"]["temperature"] > 0 and "validation" in config["calibration"]["fitted_on"]
    training = config["training"]
    assert training["train_images"] + training["validation_images"] + training["holdout_images"] == 48
    assert config["pneumo_version"]


def test_the_operating_points_are_fitted_on_the_calibrated_validation_probabilities(tiny_model_folder,
                                                                                    synthetic_dataset):
    assert_operating_points_fitted_on_validation(Predictor.from_folder(tiny_model_folder), synthetic_dataset)


def test_validation_metrics_are_recorded_on_the_validation_split(tiny_model_folder):
    split = pd.read_csv(tiny_model_folder / "data_split.csv")
    metrics = json.loads((tiny_model_folder / "metrics_validation.json").read_text())
    assert metrics["n_images"] == (split.split == "validation").sum()
    assert set(metrics) >= {"accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc",
                            "expected_calibration_error", "confusion_matrix"}
    assert not set(split[split.split == "train"].patient) & set(split[split.split == "validation"].patient)


def test_model_card_states_use_limits_and_metrics(tiny_model_folder):
    from huggingface_hub import ModelCard

    card = (tiny_model_folder / "README.md").read_text()
    metadata = ModelCard(card).data
    assert (metadata.license, metadata.library_name, metadata.pipeline_tag) == ("cc-by-4.0", "keras",
                                                                                 "image-classification")
    # model-index holds the public dataset's test split only; this model has validation metrics alone.
    assert not metadata.eval_results
    for words in ("Not a medical device", "Intended use", "Limitations", "one hospital", "Validation"):
        assert words in card
    metrics = json.loads((tiny_model_folder / "metrics_validation.json").read_text())
    assert f"{metrics['accuracy']:.3f}" in card


def test_the_folder_loads_as_a_predictor(tiny_model_folder):
    predictor = Predictor.from_folder(tiny_model_folder)
    assert (predictor.height, predictor.width) == (64, 64)
    assert predictor.threshold == json.loads((tiny_model_folder / "pneumo.json").read_text())["threshold"]


def test_a_rerun_resumes_after_the_last_finished_epoch(tiny_model_folder, synthetic_dataset, tmp_path, capsys):
    """The tiny model's run (two epochs; conftest.py) rerun in a copy of its folder with a third."""
    out = shutil.copytree(tiny_model_folder, tmp_path / "m")
    assert main([*TINY_CNN_LSTM_OPTIONS, "--data", str(synthetic_dataset), "--out", str(out), "--epochs", "3"]) == 0
    assert "resuming after epoch 2" in capsys.readouterr().out
    history = pd.read_csv(out / "history.csv")
    assert history.epoch.tolist() == [0, 1, 2]


def test_a_fine_tune_from_a_model_folder_with_encoding_pairs_and_smoothing_records_them(tiny_model_folder,
                                                                                         synthetic_dataset, tmp_path):
    """--init-from starts from the folder's weights (an epoch at a tiny learning rate leaves them nearly as they
    were, where a network of another seed differs by its random start) and validates on the folder's patients;
    --encoding-consistency trains on pairs and --smoothing smooths the input; pneumo.json says all three."""
    out = tmp_path / "fine-tuned"
    assert main([*TINY_CNN_LSTM_OPTIONS, "--data", str(synthetic_dataset), "--out", str(out), "--epochs", "1",
                 "--seed", "7", "--learning-rate", "1e-5", "--init-from", str(tiny_model_folder),
                 "--encoding-consistency", "5", "--smoothing", "1.0"]) == 0
    config = json.loads((out / "pneumo.json").read_text())
    training = config["training"]
    assert "plus 5 x the squared gap between the log-odds" in training["loss"]
    assert "fine-tuned from the model folder" in training["weights_note"]
    assert model_folder.model_file_sha256(tiny_model_folder) in training["weights_note"]
    assert config["preprocessing"]["smoothing"] == {"method": "gaussian", "sigma": 1.0}
    assert (out / "data_split.csv").read_text() == (tiny_model_folder / "data_split.csv").read_text()
    started, fine_tuned = ([np.asarray(w) for w in model_folder.load_network(folder).trainable_weights]
                           for folder in (tiny_model_folder, out))  # batch norm's moving statistics move fast
    assert max(float(np.abs(a - b).max()) for a, b in zip(started, fine_tuned)) < 1e-3


def test_init_from_a_folder_of_another_network_is_one_line_and_exit_1(tiny_model_folder, synthetic_dataset,
                                                                        tmp_path, capsys):
    assert main(["--arch", "row_lstm", "--input-size", "64", "--data", str(synthetic_dataset),
                 "--out", str(tmp_path / "m"), "--epochs", "1", "--init-from", str(tiny_model_folder)]) == 1
    error = capsys.readouterr().err
    assert "its network is cnn_lstm at 64 px" in error and "not the row_lstm" in error and "Traceback" not in error


@pytest.mark.parametrize("option, value, says", [("--smoothing", "5", "more than 4.0 pixels"),
                                                 ("--encoding-consistency", "-1", "-1 is not 0 or more"),
                                                 ("--init-from", "no-such-folder", "not a model folder")])
def test_fine_tuning_options_out_of_range_are_usage_errors(option, value, says, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["--arch", "cnn_lstm", "--data", str(tmp_path), "--out", str(tmp_path / "m"), option, value])
    assert exit_status.value.code == 2 and says in capsys.readouterr().err


def test_unknown_architecture_is_a_usage_error_that_lists_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["--arch", "vgg", "--data", str(tmp_path), "--out", str(tmp_path / "m")])
    assert exit_status.value.code == 2  # argparse's usage error
    error = capsys.readouterr().err
    assert "--arch" in error and "'vgg'" in error and "Traceback" not in error
    assert all(name in error for name in architecture_names())
    assert not (tmp_path / "m").exists()


def test_a_dataset_without_train_folder_is_one_line_and_exit_1(tmp_path, capsys):
    assert main(["--arch", "cnn_lstm", "--data", str(tmp_path), "--out", str(tmp_path / "m")]) == 1
    error = capsys.readouterr().err
    assert "no train/ folder" in error and "Traceback" not in error and len(error.strip().splitlines()) == 1


def test_the_split_holds_out_the_earliest_patients_of_each_series(tiny_model_folder):
    split = pd.read_csv(tiny_model_folder / "data_split.csv")
    holdout = split[split.split == "holdout_earliest"]
    numbers = split.patient.str.extract(r"(\d+)$")[0].astype(int)
    # person0..person11 are normal, person100..person111 pneumonia: the lowest 10% of the 24 are held out
    assert set(holdout.patient) == {"person0", "person1"}
    assert numbers[split.split != "holdout_earliest"].min() == 2
    assert not set(holdout.patient) & set(split[split.split != "holdout_earliest"].patient)


def test_config_records_preprocessing_operating_points_and_the_selection_criterion(tiny_model_folder):
    config = json.loads((tiny_model_folder / "pneumo.json").read_text())
    assert config["preprocessing"]["intensity"] == {"method": "equalize"}
    assert set(config["operating_points"]) == {"youden", "sensitivity_95"}
    assert config["threshold"] == config["operating_points"][config["operating_point"]]
    assert config["training"]["selection_criterion"]["name"] == "worst_balanced_accuracy_at_95_sensitivity"
    history = pd.read_csv(tiny_model_folder / "history.csv")
    assert {"val_criterion", "val_perturbed_auc", "val_auc"} <= set(history.columns)
