"""What a person reads next to a prediction: decisions with their thresholds, limits in words, agreement."""

import json

import pytest

from pneumo.demo.verdicts import (agreement, explained_class_warning, in_words, limits_sentence, measured_limits, percent,
                             percent_pair, targets_not_met, verdict)

CLASSES = ["NORMAL", "PNEUMONIA"]


def result(probability, threshold, explained="PNEUMONIA"):
    return {"label": "PNEUMONIA" if probability >= threshold else "NORMAL", "positive_class": "PNEUMONIA",
            "probabilities": {"NORMAL": 1 - probability, "PNEUMONIA": probability}, "threshold": threshold,
            "explained_class": explained}


def write_metrics(folder, split, confusion, **values):
    folder.mkdir(exist_ok=True)
    (folder / f"metrics_{split}.json").write_text(json.dumps({"confusion_matrix": confusion, **values}))
    return folder


@pytest.mark.parametrize("probability, text", [(0.85, "85%"), (0.9999, ">99.9%"), (1.0, ">99.9%"), (0.0, "<0.1%"),
                                               (0.996, "99.6%"), (0.004, "0.4%"), (0.5, "50%")])
def test_probabilities_are_percentages_that_never_claim_certainty(probability, text):
    assert percent(probability) == text


def test_a_probability_just_below_its_threshold_shows_enough_decimals_to_say_so():
    assert percent_pair(0.8652, 0.8657) == ("86.5%", "86.6%")
    assert percent_pair(0.2, 0.48) == ("20%", "48%")


def test_the_verdict_puts_the_decision_where_its_probability_and_threshold_are():
    assert verdict(result(0.85, 0.866)) == "PNEUMONIA 85%, below this model's 87% threshold → NORMAL"
    assert verdict(result(0.99, 0.48)) == "PNEUMONIA 99%, at or above this model's 48% threshold → PNEUMONIA"


@pytest.mark.parametrize("fraction, words", [(0.48, "about half"), (0.325, "about a third"), (0.005, "about 1 in 200"),
                                             (0.1, "about 1 in 10"), (0.0, "none"), (0.99, "almost all")])
def test_fractions_are_said_in_words(fraction, words):
    assert in_words(fraction) == words


def test_limits_are_read_from_the_test_metrics_first_and_say_which_split(tmp_path):
    folder = write_metrics(tmp_path / "model", "validation", [[180, 12], [5, 549]])
    write_metrics(folder, "test", [[112, 122], [2, 388]])
    limits = measured_limits(folder, CLASSES, "PNEUMONIA")
    assert (limits.split, limits.negatives, limits.false_positives, limits.positives, limits.false_negatives) == \
        ("test", 234, 122, 390, 2)
    assert limits_sentence(limits) == ("Measured on the official test set, this model flags about half of normal X-rays "
                                       "as pneumonia (122 of 234) and misses about 1 in 200 pneumonia X-rays (2 of 390).")


def test_a_folder_with_validation_metrics_only_says_the_test_set_was_not_scored(tmp_path):
    limits = measured_limits(write_metrics(tmp_path / "model", "validation", [[180, 12], [5, 549]]), CLASSES, "PNEUMONIA")
    assert "validation split (the official test set was not scored)" in limits_sentence(limits)


def test_a_folder_without_metrics_says_its_limits_are_unknown(tmp_path):
    assert measured_limits(tmp_path, CLASSES, "PNEUMONIA") is None
    assert "unknown" in limits_sentence(None)


def test_agreement_carries_the_errors_behind_each_answer(tmp_path):
    limits = {"A": measured_limits(write_metrics(tmp_path / "a", "test", [[112, 122], [2, 388]]), CLASSES, "PNEUMONIA"),
              "B": measured_limits(write_metrics(tmp_path / "b", "test", [[158, 76], [3, 387]]), CLASSES, "PNEUMONIA")}
    agreed = agreement({"A": result(0.9, 0.5), "B": result(0.95, 0.5)}, limits)
    assert agreed.agree and agreed.headline == "Both models agree: PNEUMONIA."
    assert agreed.caveat == ("Agreement is not confirmation: on the official test set, A flags about half of normal "
                             "X-rays as pneumonia (122 of 234); B flags about a third of normal X-rays as pneumonia "
                             "(76 of 234).")
    split = agreement({"A": result(0.9, 0.5), "B": result(0.2, 0.5)}, limits)
    assert not split.agree and split.headline == "The models disagree on this image (A says PNEUMONIA; B says NORMAL)."
    assert "B misses about 1 in 150 pneumonia X-rays (3 of 390)" in split.caveat


def test_a_heatmap_of_a_class_with_almost_no_probability_is_flagged():
    assert explained_class_warning(result(0.999, 0.5, explained="PNEUMONIA")) is None
    assert "almost no evidence" in explained_class_warning(result(0.9995, 0.5, explained="NORMAL"))


def test_the_targets_not_met_come_from_the_test_metrics(tmp_path):
    folder = write_metrics(tmp_path / "model", "test", [[112, 122], [2, 388]], accuracy=0.95, roc_auc=0.953,
                           specificity=0.479, expected_calibration_error=0.183)
    assert targets_not_met(folder) == ["ROC-AUC 0.953 (target ≥ 0.97)", "specificity 0.479 (target ≥ 0.88)",
                                       "calibration error (ECE) 0.183 (target ≤ 0.05)"]


def test_a_calibration_error_below_its_target_meets_it(tmp_path):
    folder = write_metrics(tmp_path / "model", "test", [[220, 14], [2, 388]], accuracy=0.97, roc_auc=0.99,
                           specificity=0.94, expected_calibration_error=0.03)
    assert targets_not_met(folder) == []
