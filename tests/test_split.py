"""The patient-level split holds out the share asked for (any share between 0 and 1), the same patients as
ever for the bundled models' 0.15, and is stored whole or not at all."""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, write_synthetic_class_folders
from pneumo.training import data

REAL_DATA = REPO.parent / "shared" / "data" / "chest_xray"


@pytest.fixture(scope="module")
def many_patients(tmp_path_factory):
    """600 files of 300 patients (two each, a few three), 30% of them positive; the files differ byte-wise."""
    folder = tmp_path_factory.mktemp("patients")
    rows = []
    for patient in range(300):
        for image in range(3 if patient % 7 == 0 else 2):
            path = folder / f"person{patient}_{image}.png"
            path.write_bytes(f"{patient}-{image}".encode())
            label = int(patient % 10 < 3)
            rows.append((str(path), label, data.CLASS_NAMES[label], f"person{patient}"))
    return pd.DataFrame(rows, columns=["path", "label", "class_name", "patient"])


@pytest.mark.parametrize("fraction", [0.1, 0.15, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9])
def test_the_held_out_share_of_patients_is_the_one_asked_for(many_patients, fraction):
    train, validation = data.split_by_patient(many_patients, fraction, seed=3)
    assert len(train) + len(validation) == len(many_patients)
    assert not set(train.patient) & set(validation.patient)
    share = validation.patient.nunique() / many_patients.patient.nunique()
    assert share == pytest.approx(fraction, abs=0.015)
    assert validation.label.mean() == pytest.approx(many_patients.label.mean(), abs=0.03)  # stratified


@pytest.mark.parametrize("fraction, folds", [(0.15, (1, 7)), (0.25, (1, 4)), (0.1, (1, 10)), (0.2, (1, 5)),
                                             (0.4, (2, 5)), (0.7, (7, 10)), (0.3, (3, 10))])
def test_a_fraction_near_one_kth_is_one_fold_of_k_as_it_always_was(fraction, folds):
    assert data.validation_folds(fraction, 1000) == folds


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, float("nan")])
def test_a_fraction_outside_0_1_is_refused(many_patients, fraction):
    with pytest.raises(ValueError, match="validation_fraction must be between 0 and 1"):
        data.split_by_patient(many_patients, fraction)


def test_the_bundled_models_validation_patients_are_the_split_of_today():
    """data_split.csv of the bundled CNN+LSTM was made with validation_fraction 0.15, seed 42, after holding out
    the earliest 10% of each series: the same split comes out now."""
    if not (REAL_DATA / "train").exists():
        pytest.skip("the shared dataset is not beside this checkout")
    frame = data.list_labeled_images(REAL_DATA / "train")
    late = data.earliest_acquisitions(frame, 0.1)
    _, validation = data.split_by_patient(frame[~late].reset_index(drop=True), 0.15, seed=42)
    stored = pd.read_csv(REPO / "models" / "cnn-lstm" / "data_split.csv")
    stored = stored[stored.split == "validation"]
    assert set(validation.patient) == set(stored.patient)
    assert sorted(Path(path).relative_to(REAL_DATA).as_posix() for path in validation.path) == sorted(stored.path)


@pytest.mark.parametrize("option, value", [("--validation-fraction", "0"), ("--validation-fraction", "1.2"),
                                           ("--holdout-fraction", "1"), ("--holdout-fraction", "-0.1"),
                                           ("--validation-fraction", "half")])
def test_training_refuses_a_fraction_outside_its_range_as_bad_usage(option, value, capsys):
    from pneumo.training.train import parse_args

    with pytest.raises(SystemExit) as exit_status:
        parse_args(["--arch", "cnn_lstm", "--data", "d", "--out", "o", option, value])
    assert exit_status.value.code == 2 and value in capsys.readouterr().err


def test_calibrate_refuses_a_holdout_fraction_outside_0_1_as_bad_usage(capsys):
    from pneumo.site.refit import main

    with pytest.raises(SystemExit) as exit_status:
        main(["models/none", "--data", "d", "--out", "o", "--holdout-fraction", "1.5"])
    assert exit_status.value.code == 2 and "between 0 and 1" in capsys.readouterr().err


def test_calibrate_holds_out_70_percent_when_asked(tiny_model_folder, tmp_path):
    from pneumo.site.refit import refit

    write_synthetic_class_folders(tmp_path / "site", 30, seed=7)  # 30 patients, two images each
    record = refit(str(tiny_model_folder), tmp_path / "site", tmp_path / "out", holdout_fraction=0.7)
    assert record["holdout_patients"] + record["fitting_patients"] == 30
    assert record["holdout_patients"] / 30 == pytest.approx(0.7, abs=0.1)


def test_a_split_that_fails_while_written_leaves_no_file_a_resumed_run_would_trust(synthetic_dataset, tmp_path,
                                                                                   monkeypatch):
    from pneumo.hub import model_folder
    from pneumo.training.train import load_split

    args = argparse.Namespace(data=str(synthetic_dataset), holdout_fraction=0.0, validation_fraction=0.25, seed=42)
    write = pd.DataFrame.to_csv

    def interrupted(frame, path, *arguments, **options):
        write(frame.head(3), path, *arguments, **options)  # a few rows reach the disk, then the run dies
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_split(args, tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    train, validation, holdout = load_split(args, tmp_path)
    assert len(train) + len(validation) == 48 and holdout.empty
    assert len(pd.read_csv(tmp_path / model_folder.SPLIT_FILE)) == 48
    assert np.isin(validation.path, train.path).sum() == 0
