"""The loss that asks one picture to score alike whatever file it arrives in (pneumo/training/losses.py)."""

import numpy as np
import pytest

from pneumo.training.losses import ConsistentCrossEntropy


def softmax_of_log_odds(log_odds):
    positive = 1 / (1 + np.exp(-np.asarray(log_odds, np.float64)))
    return np.stack([1 - positive, positive], axis=1).astype(np.float32)


LABELS = np.eye(2, dtype=np.float32)[[1, 1, 0, 0]]


def per_image(loss, log_odds):
    return np.asarray(loss.call(LABELS, softmax_of_log_odds(log_odds)))


def test_identical_pairs_cost_the_cross_entropy_alone():
    from keras.losses import categorical_crossentropy

    log_odds = [2.0, 2.0, -1.5, -1.5]
    expected = np.asarray(categorical_crossentropy(LABELS, softmax_of_log_odds(log_odds), label_smoothing=0.05))
    assert per_image(ConsistentCrossEntropy(30, 0.05), log_odds) == pytest.approx(expected, abs=1e-5)


def test_a_gap_costs_its_square_over_the_batch_variance_on_both_images_of_the_pair():
    log_odds = np.array([2.0, 3.0, -1.0, -1.0])
    gaps = per_image(ConsistentCrossEntropy(30), log_odds) - per_image(ConsistentCrossEntropy(0), log_odds)
    expected = 30 * 1.0 / (log_odds.var() + 1e-3)
    assert gaps == pytest.approx([expected, expected, 0, 0], abs=1e-4)


def test_shrinking_every_log_odds_does_not_shrink_the_penalty():
    """Temperature scaling undoes a shrink, so a shrink must not buy consistency."""
    log_odds = np.array([2.0, 3.0, -1.0, -1.4])

    def penalty(scale):
        return (per_image(ConsistentCrossEntropy(30), scale * log_odds)
                - per_image(ConsistentCrossEntropy(0), scale * log_odds))

    assert penalty(0.25) == pytest.approx(penalty(1.0), rel=0.01)


def test_the_weight_and_smoothing_survive_a_save():
    restored = ConsistentCrossEntropy.from_config(ConsistentCrossEntropy(7.5, 0.05, 0).get_config())
    assert (restored.weight, restored.label_smoothing, restored.positive_index) == (7.5, 0.05, 0)
