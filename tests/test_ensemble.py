"""The ensemble evidence: members on one data split, each alone and every mean of two or more, on the
criterion the models were chosen on."""

import numpy as np
import pandas as pd
import pytest

from conftest import copy_with_threshold
from pneumo.ensemble import combination_table, main, member_scores
from pneumo.errors import DataFolderError


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
    assert 0.0 <= table.loc["twin", "criterion"] <= 1.0


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
