"""Acquisition perturbations: the documented robustness suite and the training augmentation built on it."""

import numpy as np
import pytest

from conftest import example_images
from pneumo.imaging.decoding import read_grayscale
from pneumo.training.perturbations import SUITE, perturb, random_acquisition


@pytest.fixture(scope="module")
def gray():
    return read_grayscale(example_images()[0])


def test_every_perturbation_comes_at_two_strengths():
    strengths = {}
    for perturbation in SUITE:
        strengths.setdefault(perturbation.name, []).append(perturbation.strength)
    assert len(strengths) >= 10
    assert all(sorted(found) == ["mild", "strong"] for found in strengths.values())


@pytest.mark.parametrize("perturbation", SUITE, ids=lambda p: f"{p.name}-{p.strength}")
def test_a_perturbation_changes_the_image_keeps_its_shape_and_repeats_with_its_seed(gray, perturbation):
    once, again = perturb(gray, perturbation, seed=3), perturb(gray, perturbation, seed=3)
    assert once.shape == gray.shape and once.dtype == np.float32
    assert 0.0 <= once.min() and once.max() <= 1.0
    assert np.array_equal(once, again)
    assert np.abs(once - gray).mean() > 1e-3


def test_the_strong_strength_changes_more_than_the_mild_one(gray):
    for name in {p.name for p in SUITE}:
        mild, strong = (next(p for p in SUITE if p.name == name and p.strength == s) for s in ("mild", "strong"))
        assert np.abs(perturb(gray, strong, 0) - gray).mean() > np.abs(perturb(gray, mild, 0) - gray).mean(), name


def test_random_acquisitions_differ_and_stay_in_range(gray):
    rng = np.random.default_rng(0)
    first, second = random_acquisition(gray, rng), random_acquisition(gray, rng)
    assert first.shape == gray.shape and 0.0 <= first.min() and first.max() <= 1.0
    assert not np.array_equal(first, second)
