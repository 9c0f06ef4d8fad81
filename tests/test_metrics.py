"""Metrics, calibration and threshold choice as pure functions of arrays."""

import numpy as np
import pytest
from scipy.special import softmax

from pneumo.prediction.calibration import Calibration, choose_threshold, fit_calibration, fit_temperature
from pneumo.metrics import compute_metrics, expected_calibration_error


def test_metrics_match_a_hand_counted_confusion_matrix():
    y_true = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    prob = [0.1, 0.2, 0.7, 0.4, 0.9, 0.8, 0.3, 0.6, 0.95, 0.55]
    m = compute_metrics(y_true, prob, threshold=0.5)
    assert m["confusion_matrix"] == [[3, 1], [1, 5]]
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["sensitivity"] == pytest.approx(5 / 6)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(5 / 6)
    assert m["f1"] == pytest.approx(5 / 6)
    assert m["roc_auc"] == pytest.approx(20 / 24)  # positive-over-negative pairs


def test_threshold_moves_the_decision():
    assert compute_metrics([0, 1], [0.6, 0.7], threshold=0.65)["accuracy"] == 1.0
    assert compute_metrics([0, 1], [0.6, 0.7], threshold=0.5)["accuracy"] == 0.5


def test_auc_is_none_with_one_class():
    assert compute_metrics([1, 1], [0.2, 0.9])["roc_auc"] is None


def test_ece_is_zero_for_perfect_calibration_and_large_for_overconfidence():
    rng = np.random.default_rng(0)
    prob = rng.random(20000)
    calibrated = (rng.random(20000) < prob).astype(int)
    assert expected_calibration_error(calibrated, prob) < 0.02
    assert expected_calibration_error(np.zeros(100, int), np.full(100, 0.9)) == pytest.approx(0.9)


def test_temperature_fit_recovers_the_temperature_that_generated_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(20000, 2))
    labels = (rng.random(20000) < softmax(logits / 2.5, axis=1)[:, 1]).astype(int)
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.08)


def test_calibration_fit_recovers_a_class_bias_the_temperature_cannot_fix():
    """Scores that lean towards PNEUMONIA by 2 (in logit units): the bias takes it out, the temperature cannot."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(20000, 2))
    labels = (rng.random(20000) < softmax(logits / 1.5 + [0.0, -2.0], axis=1)[:, 1]).astype(int)
    fitted = fit_calibration(logits, labels)
    assert fitted.temperature == pytest.approx(1.5, rel=0.08) and fitted.bias[0] == 0.0
    assert fitted.bias[1] == pytest.approx(-2.0, abs=0.15)
    temperature_only = Calibration(fit_temperature(logits, labels))
    assert (expected_calibration_error(labels, fitted.probabilities(logits)[:, 1]) + 0.05
            < expected_calibration_error(labels, temperature_only.probabilities(logits)[:, 1]))


def test_a_folder_without_a_bias_reads_as_temperature_scaling():
    block = {"method": "temperature scaling", "temperature": 2.0, "fitted_on": "validation split"}
    calibration = Calibration.from_config(block)
    assert calibration == Calibration(2.0) and calibration.to_config("validation split") == block
    logits = np.array([[0.0, 3.0], [1.0, 0.0]])
    # softmax([0, 1.5]) and softmax([0.5, 0]), written out
    assert np.allclose(calibration.probabilities(logits), [[1 / (1 + np.exp(1.5)), 1 / (1 + np.exp(-1.5))],
                                                           [1 / (1 + np.exp(-0.5)), 1 / (1 + np.exp(0.5))]])
    with_bias = Calibration(2.0, (0.0, -1.0))
    assert Calibration.from_config(with_bias.to_config("x")) == with_bias


def test_calibrated_probabilities_keep_the_ranking():
    logits = np.array([[0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    assert np.argsort(Calibration(3.0).probabilities(logits)[:, 1]).tolist() == [1, 2, 0]


def test_threshold_separates_separable_scores():
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.3, 0.62, 0.65, 0.8, 0.9]
    threshold = choose_threshold(labels, scores)
    assert 0.62 < threshold <= 0.65
    assert compute_metrics(labels, scores, threshold)["accuracy"] == 1.0


def test_bootstrap_intervals_hold_the_estimate_and_shrink_with_more_images():
    from pneumo.metrics import bootstrap_intervals

    rng = np.random.default_rng(0)
    def intervals(n):
        labels = rng.integers(0, 2, n)
        scores = np.clip(labels * 0.3 + rng.random(n) * 0.7, 0, 1)
        return compute_metrics(labels, scores, 0.5), bootstrap_intervals(labels, scores, 0.5, resamples=300)
    small_metrics, small = intervals(100)
    _, large = intervals(2000)
    for key in ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc"):
        low, high = small[key]
        assert low <= small_metrics[key] <= high, key
        assert large[key][1] - large[key][0] < high - low, key


def test_subgroup_metrics_count_each_subgroup():
    from pneumo.metrics import subgroup_metrics

    labels = [0, 0, 1, 1, 1]
    scores = [0.1, 0.7, 0.9, 0.8, 0.2]
    groups = ["normal", "normal", "bacterial", "bacterial", "viral"]
    found = subgroup_metrics(labels, scores, 0.5, groups)
    assert found["normal"] == {"n_images": 2, "accuracy": 0.5, "roc_auc_vs_other_class": pytest.approx(5 / 6)}
    assert found["bacterial"]["accuracy"] == 1.0 and found["bacterial"]["roc_auc_vs_other_class"] == 1.0
    assert found["viral"]["accuracy"] == 0.0 and found["viral"]["roc_auc_vs_other_class"] == 0.5


def test_the_screening_threshold_reaches_the_sensitivity_asked():
    from pneumo.prediction.calibration import threshold_for_sensitivity

    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    threshold = threshold_for_sensitivity(labels, scores, 0.95)
    assert threshold == 0.4
    assert compute_metrics(labels, scores, threshold)["sensitivity"] == 1.0
