"""Acquisition perturbations: the documented robustness suite and the training augmentation built on it."""

import numpy as np
import pytest

from conftest import example_images, png_bytes
from pneumo.imaging.decoding import read_grayscale
from pneumo.training.perturbations import SUITE, as_another_file, perturb, random_acquisition


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


def test_another_file_of_the_picture_reads_back_as_the_same_picture(gray):
    """JPEG or PNG, at its own size or upscaled 2-9 times: what the model's decoding makes of it is the picture."""
    from pneumo.imaging.decoding import load_model_input

    rng = np.random.default_rng(0)
    kinds, gaps = set(), []
    own = load_model_input(png_bytes((gray * 255).round().astype(np.uint8)), 224, 224)
    for _ in range(12):
        data = as_another_file(gray, rng)
        kinds.add((data[:4] == b"\x89PNG", read_grayscale(data).shape[0] > gray.shape[0]))
        gaps.append(np.abs(load_model_input(data, 224, 224) - own).mean())
    assert len(kinds) >= 3, kinds  # re-encoded and upscaled, in more than one way
    assert max(gaps) < 0.02 and max(gaps) > 0, gaps


def test_an_upscaled_file_of_a_large_picture_stays_readable():
    """Training decodes large X-rays at up to 4x the input side; 9 times that would pass the decoder's pixel limit."""
    rng = np.random.default_rng(1)
    large = np.full((896, 896), 0.5, np.float32)
    sides = [read_grayscale(as_another_file(large, rng)).shape[0] for _ in range(12)]
    assert max(sides) == 2048 and min(sides) == 896, sides
