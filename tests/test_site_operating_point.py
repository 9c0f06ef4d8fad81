"""The label-free site operating point (pneumo.site.operating_point) on synthetic scores with known answers."""

import numpy as np
import pytest

from pneumo.prediction.calibration import Calibration, ProbabilityMap, SiteCalibration, log_odds_of
from pneumo.site.operating_point import (
    MAX_MIX_PULL,
    SiteReference,
    batch_norm_allowed,
    batch_norm_kept,
    fit_site,
    thinned_to,
)

CEILING = 6.6  # label smoothing leaves the bundled models' log-odds a ceiling, under which pneumonia piles up


def pneumonia(rng, n, shift=0.0):
    """Pneumonia scores shaped like the bundled models': most just under the ceiling, a long tail below it."""
    piled = CEILING - rng.gamma(1.5, 0.25, n)
    tail = rng.uniform(-1.0, CEILING, n)
    return np.where(rng.random(n) < 0.92, piled, tail) + shift


def normal(rng, n, centre=-4.0, spread=0.6):
    """Normal scores: a narrow heap low, a right tail (validation's); a site moves and widens them."""
    return centre + spread * (rng.gamma(2.0, 1.0, n) - 1.0)


def validation(seed=100, n=655):
    rng = np.random.default_rng(seed)
    k = int(0.74 * n)
    z = np.concatenate([pneumonia(rng, k), normal(rng, n - k)])
    return SiteReference.from_scores(z, np.r_[np.ones(k, bool), np.zeros(n - k, bool)])


REFERENCE = validation()
SOURCE_THRESHOLD = 1.8  # the folder's Youden threshold on validation, as z


def site_scores(prevalence, centre=-4.0, spread=0.6, n=800, seed=0):
    rng = np.random.default_rng(seed)
    k = int(round(prevalence * n))
    z = np.concatenate([pneumonia(rng, k), normal(rng, n - k, centre, spread)])
    return z, np.r_[np.ones(k, bool), np.zeros(n - k, bool)]


@pytest.mark.parametrize("prevalence", [0.1, 0.25, 0.625, 0.9])
def test_well_separated_classes_give_back_their_prevalence_within_0_05(prevalence):
    z, _ = site_scores(prevalence)
    fit = fit_site(z, REFERENCE, SOURCE_THRESHOLD, bootstrap=50)
    assert fit.trusted, fit.reason
    assert abs(fit.prevalence - prevalence) <= 0.05
    assert fit.prevalence_interval[0] <= fit.prevalence <= fit.prevalence_interval[1]


def test_a_normal_class_that_moved_up_is_cut_at_a_higher_threshold_that_keeps_the_sensitivity():
    z, positives = site_scores(0.6, centre=-2.0, spread=1.6, seed=1)
    fit = fit_site(z, REFERENCE, SOURCE_THRESHOLD, bootstrap=50)
    assert fit.trusted, fit.reason
    assert fit.scale > 1.5  # the normal class widened
    called = z >= fit.threshold_log_odds
    assert fit.threshold_log_odds > SOURCE_THRESHOLD
    assert called[positives].mean() >= 0.90
    assert (~called[~positives]).mean() > (z[~positives] < SOURCE_THRESHOLD).mean() + 0.03


def test_a_site_like_validation_keeps_the_source_threshold():
    z, _ = site_scores(0.3, seed=9)
    fit = fit_site(z, REFERENCE, SOURCE_THRESHOLD, bootstrap=30)
    assert fit.trusted, fit.reason
    assert fit.threshold_log_odds == pytest.approx(SOURCE_THRESHOLD, abs=0.6)


def test_the_site_probability_is_calibrated_at_the_site():
    z, positives = site_scores(0.4, centre=-2.0, spread=1.2, seed=2, n=4000)
    fit = fit_site(z, REFERENCE, SOURCE_THRESHOLD, bootstrap=20)
    p = fit.probability_map.probabilities(z)
    bins = np.digitize(p, np.linspace(0, 1, 11)[1:-1])
    ece = sum(abs(p[bins == b].mean() - positives[bins == b].mean()) * (bins == b).mean()
              for b in range(10) if (bins == b).any())
    assert ece < 0.05  # the target at the site: 0.06


def test_the_probability_map_never_turns_back_at_the_far_tail():
    grid = np.linspace(-30, 30, 241)
    turning_back = -0.05 * (grid - 6.0) ** 2 + 3.0  # two Gaussians of unequal spread: a downward parabola
    z = np.linspace(-10, 30, 500)
    where_scores_lie = np.exp(-0.5 * (grid / 4.0) ** 2)
    p = ProbabilityMap.of_log_odds(grid, turning_back, where_scores_lie).probabilities(z)
    assert np.all(np.diff(p) >= -1e-12)
    assert p[-1] == pytest.approx(p.max()) and p[-1] > 0.9


def test_resnet50_shape_a_thin_far_tail_does_not_become_the_pneumonia_class():
    """The ResNet50 case of issue 32: a thin tail of pneumonia scores far above the rest (6 images). A free
    two-component mixture gave that tail to the upper component (prevalence 0.08, sensitivity 0.12)."""
    rng = np.random.default_rng(3)
    positives = np.concatenate([pneumonia(rng, 384), rng.uniform(CEILING + 4, CEILING + 6, 6)])
    negatives = normal(rng, 234, centre=-2.5, spread=1.5)
    z = np.concatenate([positives, negatives])
    fit = fit_site(z, REFERENCE, SOURCE_THRESHOLD, bootstrap=50)
    if fit.trusted:
        assert abs(fit.prevalence - 390 / 624) <= 0.1
        assert (positives >= fit.threshold_log_odds).mean() >= 0.85
    else:
        assert fit.reason


@pytest.mark.parametrize("one_class", ["pneumonia", "normal"])
def test_scores_of_one_class_are_refused_or_read_as_nearly_all_that_class(one_class):
    rng = np.random.default_rng(4)
    z = pneumonia(rng, 500) if one_class == "pneumonia" else normal(rng, 500)
    fit = fit_site(z, REFERENCE, SOURCE_THRESHOLD, bootstrap=30)
    if fit.trusted:
        assert fit.prevalence >= 0.95 if one_class == "pneumonia" else fit.prevalence <= 0.05
    else:
        assert "degenerate" in fit.reason or "prevalence" in fit.reason


def test_the_guard_refuses_classes_that_are_not_separated():
    rng = np.random.default_rng(5)
    overlapping = SiteReference.from_scores(rng.normal(1.0, 3.0, 600), rng.random(600) < 0.5)
    fit = fit_site(rng.normal(1.0, 3.0, 600), overlapping, 1.0, bootstrap=30)
    assert not fit.trusted
    assert any(not check.passed for check in fit.checks if check.name in ("separation", "class_size",
                                                                            "prevalence_interval"))


def test_the_guard_refuses_a_pneumonia_class_unlike_validations():
    rng = np.random.default_rng(6)
    z = np.concatenate([rng.normal(-1.0, 0.3, 400), normal(rng, 400)])  # "pneumonia" low and narrow
    fit = fit_site(z, REFERENCE, SOURCE_THRESHOLD, bootstrap=30)
    assert not fit.trusted and fit.reason


def test_the_batch_norm_step_is_refused_at_a_case_mix_far_from_validations():
    near, _ = site_scores(0.7, seed=10)
    far, _ = site_scores(0.1, seed=11)
    assert batch_norm_allowed(fit_site(near, REFERENCE, SOURCE_THRESHOLD, bootstrap=20), REFERENCE) is None
    why = batch_norm_allowed(fit_site(far, REFERENCE, SOURCE_THRESHOLD, bootstrap=20), REFERENCE)
    assert why and "too far from validation's" in why


def test_the_batch_norm_step_is_undone_when_the_fit_after_it_moves_toward_validations_mix():
    """A site at 0.6 passes the check before the step (validation: 0.74). Statistics that took up its case mix
    make a share of its normals look like pneumonia, and the fit after the step says 0.72: undone. A fit after it
    that barely moves, or moves away from validation's mix, keeps it."""
    def fitted(prevalence, seed):
        fit = fit_site(site_scores(prevalence, seed=seed)[0], REFERENCE, SOURCE_THRESHOLD, bootstrap=20)
        assert fit.trusted, fit.reason
        return fit

    released = fitted(0.6, 20)
    assert batch_norm_allowed(released, REFERENCE) is None
    pulled = fitted(0.72, 21)
    assert pulled.prevalence - released.prevalence > MAX_MIX_PULL
    why = batch_norm_kept(released, pulled, REFERENCE)
    assert why and why.startswith(f"after it, the estimated prevalence moved from {released.prevalence:.2f} to "
                                  f"{pulled.prevalence:.2f}, toward validation's 0.74")
    assert batch_norm_kept(released, fitted(0.62, 22), REFERENCE) is None
    away = fitted(0.48, 23)
    assert released.prevalence - away.prevalence > MAX_MIX_PULL
    assert batch_norm_kept(released, away, REFERENCE) is None


def test_the_guard_refuses_too_few_images():
    z, _ = site_scores(0.5, n=60, seed=7)
    fit = fit_site(z, REFERENCE, SOURCE_THRESHOLD, bootstrap=10)
    assert not fit.trusted and "at least 100" in fit.reason


def test_a_fit_survives_its_record_in_pneumo_json():
    z, _ = site_scores(0.3, seed=8)
    fit = fit_site(z, REFERENCE, SOURCE_THRESHOLD, bootstrap=10)
    block = fit.to_config()
    assert block["verdict"] == "trusted" and block["reason"] is None
    assert ProbabilityMap.from_config(block["probability_map"]) == fit.probability_map
    reread = SiteReference.from_config(REFERENCE.to_config())
    np.testing.assert_allclose(reread.positive.points, REFERENCE.positive.points, atol=1e-5)
    assert reread.prevalence == REFERENCE.prevalence


def test_site_calibration_composes_the_source_calibration_with_the_map():
    calibration = Calibration(0.7, (0.0, 0.5))
    grid = np.linspace(-30, 30, 241)
    probability_map = ProbabilityMap.of_log_odds(grid, 0.8 * grid - 1.0)
    logits = np.array([[0.0, 3.0], [1.0, -1.0]])
    site = SiteCalibration(calibration, probability_map, positive_index=1).probabilities(logits)
    expected = probability_map.probabilities(log_odds_of(calibration.probabilities(logits)[:, 1]))
    np.testing.assert_allclose(site[:, 1], expected)
    np.testing.assert_allclose(site.sum(axis=1), 1.0)


@pytest.mark.parametrize("prevalence", [0.1, 0.25, 0.9])
def test_thinned_to_makes_a_stand_in_site_of_that_case_mix(prevalence):
    positives = np.r_[np.ones(390, bool), np.zeros(234, bool)]
    rows = thinned_to(positives, prevalence, seed=0)
    assert abs(positives[rows].mean() - prevalence) < 0.01
    assert len(np.unique(rows)) == len(rows)


def test_a_score_is_called_positive_exactly_when_it_reaches_the_thresholds_log_odds():
    """The probability map rises strictly, so the threshold on the site's probability and the one on the score
    agree everywhere (a flat stretch would call scores below the threshold positive too)."""
    z, _ = site_scores(0.3, centre=-2.0, spread=1.6, seed=12)
    fit = fit_site(z, REFERENCE, SOURCE_THRESHOLD, bootstrap=10)
    grid = np.linspace(-30, 30, 6001)
    p = fit.probability_map.probabilities(grid)
    assert np.all(np.diff(fit.probability_map.log_odds_at) > 0)
    np.testing.assert_array_equal(p >= fit.threshold, grid >= fit.threshold_log_odds - 1e-9)


def test_a_site_calibration_reads_like_its_source_on_a_page_or_a_card():
    source = Calibration(0.7, (0.0, 0.5))
    grid = np.linspace(-30, 30, 241)
    site = SiteCalibration(source, ProbabilityMap.of_log_odds(grid, grid), positive_index=1)
    assert (site.temperature, site.bias) == (0.7, (0.0, 0.5))
    assert site.to_config("validation split") == source.to_config("validation split")
