"""The robustness suite and the selection criterion: the validation split clean and perturbed."""

import shutil

import numpy as np
import pandas as pd
import pytest

from pneumo.training.perturbations import SUITE
from pneumo.training.robustness import main
from pneumo.training.selection import selection_scores


def test_the_robustness_command_scores_every_perturbation_of_the_validation_split(tiny_model_folder,
                                                                                  synthetic_dataset, capsys, tmp_path):
    folder = tmp_path / "model"  # a copy: the shared tiny folder stays as training left it
    shutil.copytree(tiny_model_folder, folder, ignore=shutil.ignore_patterns("checkpoints"))
    assert main([str(folder), "--data", str(synthetic_dataset)]) == 0
    table = pd.read_csv(folder / "metrics_robustness.csv", keep_default_na=False)
    assert len(table) == 1 + len(SUITE)
    assert table.perturbation[0] == "clean" and set(table.strength[1:]) == {"mild", "strong"}
    assert {"roc_auc", "sensitivity", "specificity", "auc_change"} <= set(table.columns)
    assert table.auc_change[0] == 0.0
    assert "largest AUC loss" in capsys.readouterr().out
    worst = table.iloc[1:].loc[table.auc_change[1:].idxmin()]
    card = (folder / "README.md").read_text()
    assert "Under acquisition perturbations" in card
    assert f"largest AUC change is {worst.auc_change:+.3f} ({worst.perturbation} {worst.strength})" in card


def test_the_wrong_data_root_is_one_line(tiny_model_folder, tmp_path, capsys):
    assert main([str(tiny_model_folder), "--data", str(tmp_path)]) == 1
    assert "not the dataset root" in capsys.readouterr().err


def test_the_criterion_is_the_worst_set_at_the_clean_screening_threshold():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    clean = (labels, np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]))
    shifted = (labels, clean[1] + 0.25)  # every score higher: one normal (0.4 + 0.25) crosses the threshold 0.6
    scores = selection_scores(clean, shifted, None)
    assert scores["clean_balanced_accuracy"] == 1.0
    assert scores["perturbed_auc"] == 1.0  # the ranking survives ...
    assert scores["criterion"] == scores["perturbed_balanced_accuracy"] == pytest.approx((1 + 0.75) / 2)  # ... the threshold not
