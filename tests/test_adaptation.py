"""Adapting a model to a site without labels (pneumo.site.adabn, pneumo.site.adapt, batch_eval.py --adapt) and the
cross-fitted evaluation of adaptation and refitting (pneumo.site.site_eval), on the tiny models the tests train."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_xray, write_synthetic_class_folders
from PIL import Image

from pneumo.hub import model_folder
from pneumo.site.adabn import (
    batch_norm_layers,
    batch_norm_statistics,
    in_batches,
    reestimate_batch_norm,
)
from pneumo.hub.loading import load_predictor
from pneumo.prediction.predictor import Predictor

SITE_IMAGES = 100  # pneumo.site.adapt's minimum


def write_site(folder, count: int, brightness: float = 1.0, seed: int = 0):
    """`count` unlabeled synthetic X-rays, darker or brighter than the training ones by `brightness`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = np.clip(synthetic_xray(seed=seed + i, opacity=i % 2 == 1) * brightness, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"site_{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return write_site(tmp_path_factory.mktemp("site") / "xrays", SITE_IMAGES, brightness=0.6)


@pytest.fixture(scope="module")
def adapted_folder(tiny_model_folder, site, tmp_path_factory):
    from pneumo.site.adapt import main

    out = tmp_path_factory.mktemp("adapted") / "tiny-site"
    assert main([str(tiny_model_folder), "--images", str(site), "--out", str(out)]) == 0
    return out


def small_network(frozen: bool):
    import keras

    image = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(image)
    x = keras.layers.BatchNormalization(name="first_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.BatchNormalization(name="second_bn")(x)
    model = keras.Model(image, x)
    model.trainable = not frozen
    return model


@pytest.mark.parametrize("frozen", [False, True])
def test_the_statistics_become_the_population_ones_of_the_images_and_nothing_else_changes(frozen):
    import keras

    model = small_network(frozen)
    kernel = np.array(model.get_layer("conv").kernel)
    images = np.random.default_rng(0).normal(2.0, 3.0, (100, 8, 8, 3)).astype("float32")
    assert reestimate_batch_norm(model, in_batches(images, 32)) == 100  # batches of 32, 32, 32 and 4
    convolved = keras.Model(model.input, model.get_layer("conv").output)(images).numpy()
    first = model.get_layer("first_bn")
    np.testing.assert_allclose(first.moving_mean, convolved.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
    # The mean of the batches' variances: the population variance less the spread of the batch means.
    np.testing.assert_allclose(first.moving_variance, convolved.var(axis=(0, 1, 2)), rtol=0.01)
    np.testing.assert_array_equal(model.get_layer("conv").kernel, kernel)
    assert [(layer.trainable, layer.momentum) for layer in batch_norm_layers(model)] == [(not frozen, 0.99)] * 2


def test_a_network_without_batch_normalisation_is_refused():
    import keras

    from pneumo.errors import AdaptationError

    image = keras.Input((8, 8, 3))
    with pytest.raises(AdaptationError, match="no batch normalisation"):
        reestimate_batch_norm(keras.Model(image, keras.layers.Conv2D(2, 3)(image)), [np.zeros((1, 8, 8, 3))])


def test_export_fits_the_calibration_for_adapted_networks_and_leaves_the_released_network_as_it_was(
        tiny_model_folder, synthetic_dataset):
    from pneumo.training.export import fit_adaptation_reference, validation_pass

    predictor = Predictor.from_folder(tiny_model_folder)
    block = predictor.config["adaptation"]
    assert block["calibration"]["fitted_on"].startswith("validation split, batch-norm statistics re-estimated")
    assert set(block["operating_points"]) == {"youden", "sensitivity_95"}
    assert block["threshold"] == block["operating_points"]["youden"]
    split = pd.read_csv(tiny_model_folder / model_folder.SPLIT_FILE)
    before = batch_norm_statistics(predictor.model)
    released_auc = model_folder.read_metrics(tiny_model_folder, "validation")["roc_auc"]
    assert block["released_validation_roc_auc"] == released_auc
    validation = split[split.split == "validation"]
    scores = validation_pass(predictor.model, validation, synthetic_dataset, predictor.height, predictor.preprocessing)
    again = fit_adaptation_reference(scores, validation, predictor.positive_index, released_auc)
    assert again["threshold"] == pytest.approx(block["threshold"], abs=1e-4)
    for (mean, variance), (mean_after, variance_after) in zip(before, batch_norm_statistics(predictor.model)):
        np.testing.assert_array_equal(mean, mean_after)
        np.testing.assert_array_equal(variance, variance_after)


def test_fit_source_refits_what_export_fitted_from_one_pass_over_validation(tiny_model_folder, synthetic_dataset,
                                                                          tmp_path):
    """`pneumo adapt --fit-source` on a folder exported without the label-free blocks writes what export wrote."""
    from conftest import assert_close

    from pneumo.site.adapt import main

    folder = tmp_path / "tiny"
    shutil.copytree(tiny_model_folder, folder)
    config_path = folder / model_folder.CONFIG_FILE
    exported = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({key: value for key, value in exported.items()
                                       if key not in ("adaptation", "site_reference")}))
    assert main([str(folder), "--fit-source", str(synthetic_dataset)]) == 0
    refitted = json.loads(config_path.read_text())
    assert_close(refitted["adaptation"], exported["adaptation"], "adaptation", tolerance=1e-4)
    assert_close(refitted["site_reference"], exported["site_reference"], "site_reference", tolerance=1e-4)
    assert set(refitted["site_reference"]) == {"fitted_on", "released", "adapted"}


def test_the_adapted_folder_says_what_each_step_did_and_why(adapted_folder, tiny_model_folder, site):
    source, adapted = Predictor.from_folder(tiny_model_folder), load_predictor(str(adapted_folder))
    record = adapted.config["site_adaptation"]
    assert record["source_model_sha256"] == model_folder.model_file_sha256(tiny_model_folder)
    assert (record["images"], record["image_count"], record["skipped_files"]) == (str(site), SITE_IMAGES, 0)
    assert adapted.name == "tiny-site"
    point, batch_norm = record["operating_point"], record["batch_norm"]
    assert point["verdict"] in ("trusted", "refused") and point["checks"] and point["probability_map"]
    assert point["prevalence_interval"][0] <= point["prevalence"] <= point["prevalence_interval"][1]
    assert batch_norm["applied"] == (batch_norm["why_not"] is None)
    statistics = batch_norm_statistics(adapted.model)
    if batch_norm["applied"]:  # a darker site: every layer's statistics moved; its OOD reference is gone
        assert all(not np.allclose(mean, before) for (mean, _), (before, _) in
                   zip(statistics, batch_norm_statistics(source.model)))
        assert "out_of_distribution" not in adapted.config
    else:
        for (mean, _), (before, _) in zip(statistics, batch_norm_statistics(source.model)):
            np.testing.assert_array_equal(mean, before)
        assert adapted.predict_file(site / "site_000.png").ood_score is not None
    for left, right in zip(adapted.model.weights, source.model.weights):
        if not any(name in left.path for name in ("moving_mean", "moving_variance")):
            np.testing.assert_array_equal(left, right)
    if point["verdict"] == "trusted":
        assert adapted.threshold == point["threshold"]
    else:
        assert adapted.threshold == point["threshold_without_it"] and point["reason"]
    card = (adapted_folder / model_folder.CARD_FILE).read_text()
    assert "Adapted to a site without labels" in card and str(site) in card and record["source_model_sha256"][:12] in card


class FakeFits:
    """pneumo.site.adapt.fit_site replaced: the released network's fit, then the adapted one's, as told."""

    def __init__(self, *fits):
        self.fits, self.calls = list(fits), []

    def __call__(self, scores, reference, source_threshold):
        self.calls.append(len(scores))
        prior, trusted = self.fits.pop(0)
        return fake_fit(reference, prior, trusted, source_threshold + 1.0)


def fake_fit(reference, prior, trusted, threshold_z):
    from pneumo.site.operating_point import Check, SiteFit, probability_map

    negative = reference.negative.moved(1.0, 1.5)
    fit = SiteFit(prior, 1.0, 1.5, reference.positive, negative, probability_map(prior, reference.positive, negative),
                  threshold_z, (prior - 0.05, prior + 0.05), SITE_IMAGES)
    fit.checks = [Check("told", trusted, 0.0, "-", "told to refuse")]
    return fit


@pytest.mark.parametrize("fits, applied, network, verdict", [
    ([("validation", True), (0.5, True)], True, "adapted", "trusted"),  # a case mix like validation's
    ([(0.1, True)], False, "released", "trusted"),  # a screening site: no batch-norm step
    ([("validation", True), (0.5, False)], False, "released", "trusted"),  # the step is undone
    ([(0.5, False)], False, "released", "refused"),  # nothing is trusted: the folder's own operating point
    # the step pulls the estimated mix toward validation's: its statistics took up the site's mix, and it is undone
    ([("validation-0.15", True), ("validation-0.02", True)], False, "released", "trusted"),
])
def test_each_step_is_taken_only_where_its_guard_trusts_it(tiny_model_folder, site, monkeypatch, fits, applied,
                                                          network, verdict):
    from pneumo.site import adapt

    predictor = Predictor.from_folder(tiny_model_folder)
    released_statistics, released_threshold = batch_norm_statistics(predictor.model), predictor.threshold
    validation_prevalence = predictor.config["site_reference"]["released"]["prevalence"]
    fits = [(validation_prevalence + float(prior.removeprefix("validation") or 0) if isinstance(prior, str) else prior,
             trusted) for prior, trusted in fits]
    fake = FakeFits(*fits)
    monkeypatch.setattr(adapt, "fit_site", fake)
    record = adapt.adapt_to_folder(predictor, site)
    assert not fake.fits  # every fit asked for was made, and no more
    assert record["batch_norm"]["applied"] is applied and record["operating_point"]["network"] == network
    assert record["operating_point"]["verdict"] == verdict
    moved = any(not np.array_equal(mean, before) for (mean, _), (before, _) in
                zip(batch_norm_statistics(predictor.model), released_statistics))
    assert moved is applied
    if not applied:
        assert record["batch_norm"]["why_not"]
    if verdict == "trusted":
        assert predictor.threshold == record["operating_point"]["threshold"] != released_threshold
    else:
        assert predictor.threshold == released_threshold and "told to refuse" in record["operating_point"]["reason"]
    if fits[0][0] == 0.1:
        assert "too far from validation's" in record["batch_norm"]["why_not"]
    if len(fits) == 2 and fits[1][1] and not applied:
        assert "the statistics took up the site's case mix" in record["batch_norm"]["why_not"]
        assert record["batch_norm"]["estimated_prevalence_after_it"] == pytest.approx(fits[1][0], abs=1e-4)


def test_too_few_usable_images_are_refused_and_nothing_is_written(tiny_model_folder, tmp_path, capsys):
    from pneumo.site.adapt import main

    folder = write_site(tmp_path / "few", SITE_IMAGES - 1)
    (folder / "broken.png").write_bytes(b"not an image")
    assert main([str(tiny_model_folder), "--images", str(folder), "--out", str(tmp_path / "out")]) == 1
    assert "99 usable X-rays: adapting to a site needs at least 100" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_model_without_batch_normalisation_gets_the_site_operating_point_only(row_lstm_folder, site, tmp_path,
                                                                               capsys):
    from pneumo.site.adapt import main

    assert main([str(row_lstm_folder), "--images", str(site), "--out", str(tmp_path / "out")]) == 0
    assert "batch-norm step not taken (its network has no batch normalisation" in capsys.readouterr().out
    record = model_folder.read_config(tmp_path / "out")["site_adaptation"]
    assert not record["batch_norm"]["applied"] and record["operating_point"]["network"] == "released"


def test_batch_eval_adapt_scores_as_the_adapted_folder_and_says_so(tiny_model_folder, row_lstm_folder, site,
                                                                    adapted_folder, tmp_path, capsys):
    import batch_eval

    assert batch_eval.main([str(site), "--out", str(tmp_path / "adapt"), "--model", str(tiny_model_folder),
                            "--model", str(row_lstm_folder), "--adapt", "--no-figures", "--no-intervals"]) == 0
    assert batch_eval.main([str(site), "--out", str(tmp_path / "folder"), "--model", str(adapted_folder),
                            "--no-figures", "--no-intervals"]) == 0
    said = capsys.readouterr().err
    assert "tiny-cnn-lstm: 100 images; " in said and "site operating point" in said
    assert "tiny-row-lstm: 100 images; batch-norm step not taken (its network has no batch normalisation" in said
    transductive = pd.read_csv(tmp_path / "adapt" / "tiny-cnn-lstm" / "predictions.csv")
    written = pd.read_csv(tmp_path / "folder" / "tiny-site" / "predictions.csv")
    np.testing.assert_allclose(transductive.filter(like="prob").to_numpy(), written.filter(like="prob").to_numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(transductive.threshold, written.threshold, atol=1e-6)
    metrics = json.loads((tmp_path / "adapt" / "tiny-cnn-lstm" / "metrics.json").read_text())
    assert "adapted without labels to " + str(site) in json.dumps(metrics)


def test_a_model_whose_validation_auc_the_re_estimation_lowers_takes_no_batch_norm_step(tiny_model_folder, site,
                                                                                       tmp_path, capsys):
    import batch_eval
    from pneumo.site.adapt import main

    folder = shutil.copytree(tiny_model_folder, tmp_path / "tiny-fixed-statistics",
                             ignore=shutil.ignore_patterns("checkpoints"))
    config = model_folder.read_config(folder)
    block = config["adaptation"]
    block["released_validation_roc_auc"] = block["validation"]["roc_auc"] + 0.011
    model_folder.write_config(folder, config)
    assert main([str(folder), "--images", str(site), "--out", str(tmp_path / "out")]) == 0
    assert "batch-norm step not taken (re-estimating its statistics" in capsys.readouterr().out
    assert batch_eval.main([str(site), "--out", str(tmp_path / "scored"), "--model", str(folder), "--adapt",
                            "--no-figures", "--no-intervals"]) == 0
    assert "tiny-cnn-lstm: 100 images; batch-norm step not taken (re-estimating" in capsys.readouterr().err


def test_batch_eval_adapt_refuses_shards(tiny_model_folder, site, tmp_path, capsys):
    import batch_eval

    with pytest.raises(SystemExit) as exit_status:
        batch_eval.main([str(site), "--out", str(tmp_path), "--model", str(tiny_model_folder), "--adapt",
                         "--shard", "0/2"])
    assert exit_status.value.code == 2
    assert "--adapt adapts to a whole folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def labeled_site(tmp_path_factory):
    """A darker site's labeled X-rays: 40 per class, two per patient."""
    root = tmp_path_factory.mktemp("labeled-site")
    write_synthetic_class_folders(root, 40, seed=11)
    for path in root.rglob("*.png"):
        Image.fromarray((np.asarray(Image.open(path)) * 0.6).astype(np.uint8)).save(path)
    return root


@pytest.fixture(scope="module")
def site_eval_run(tiny_model_folder, labeled_site):
    """(the predictor, its batch-norm statistics before, the results) of one cross-fitted site_eval of the tiny model
    on the labeled site, shared by the tests of the results and of their record (each run costs the suite 10 s)."""
    from pneumo.site.site_eval import cross_fitted

    predictor = Predictor.from_folder(tiny_model_folder)
    before = batch_norm_statistics(predictor.model)
    return predictor, before, cross_fitted(predictor, labeled_site)


def test_site_eval_scores_every_image_once_in_every_setting(site_eval_run, labeled_site):
    from pneumo.training.data import list_labeled_images
    from pneumo.site.site_eval import SETTINGS

    predictor, before, results = site_eval_run
    assert list(results["settings"]) == list(SETTINGS)
    assert results["images"] == 80 and sum(results["halves"]) == 80
    for metrics in results["settings"].values():
        assert metrics["n_images"] == 80 and len(metrics["thresholds_of_the_halves"]) == 2
    # Out of the box is the released model at its threshold, whichever half an image fell in.
    frame = list_labeled_images(labeled_site)
    probabilities = predictor.positive_probabilities(np.stack([predictor.load_image(p) for p in frame.path]))
    decided = probabilities >= predictor.threshold
    truth = frame.label.to_numpy() == 1
    released = results["settings"]["out_of_the_box"]
    assert released["thresholds_of_the_halves"] == [predictor.threshold] * 2
    assert released["confusion_matrix"] == [[int((~decided & ~truth).sum()), int((decided & ~truth).sum())],
                                            [int((~decided & truth).sum()), int((decided & truth).sum())]]
    # The predictor leaves as it came.
    assert predictor.threshold == predictor.config["threshold"]
    for (mean, _), (mean_after, _) in zip(before, batch_norm_statistics(predictor.model)):
        np.testing.assert_array_equal(mean, mean_after)


def test_site_eval_thins_the_folder_to_a_prevalence_and_a_network_without_batch_norm_has_no_such_setting(
        row_lstm_folder, labeled_site):
    """One cross-fitted run (each costs the suite about 10 s): the row LSTM at a prevalence of 0.25."""
    from pneumo.site.site_eval import cross_fitted

    results = cross_fitted(Predictor.from_folder(row_lstm_folder), labeled_site, prevalence=0.25)
    assert results["images"] == 53 and results["prevalence"] == pytest.approx(13 / 53)
    assert results["settings"]["out_of_the_box"]["n_images"] == 53
    assert list(results["settings"]) == ["out_of_the_box", "site_operating_point", "label_free_guarded", "refit"]
    assert not results["adaptable"]
    for key in ("site_operating_point", "label_free_guarded"):
        assert len(results["settings"][key]["fits_of_the_halves"]) == 2


def test_site_eval_record_keeps_the_results_and_logs_each_setting(tiny_model_folder, labeled_site, site_eval_run,
                                                                  tmp_path, capsys, monkeypatch):
    """The command on a copy of the tiny model, with the cross-fitted run it asks for already done (site_eval_run)."""
    from pneumo.site import site_eval

    folder = shutil.copytree(tiny_model_folder, tmp_path / "tiny", ignore=shutil.ignore_patterns("checkpoints"))
    asked = []

    def already_run(predictor, data, seed=0, prevalence=None):
        asked.append((Path(predictor.folder).resolve(), Path(data), seed, prevalence))
        return site_eval_run[2]

    monkeypatch.setattr(site_eval, "cross_fitted", already_run)
    assert site_eval.main([str(folder), "--data", str(labeled_site), "--record"]) == 0
    assert asked == [(folder.resolve(), labeled_site, 0, None)]
    printed = capsys.readouterr().out
    assert "label-free, as pneumo adapt decides" in printed and "refit with labels" in printed
    results = json.loads((folder / model_folder.SITE_EVAL_FILE).read_text())["at_prevalence"]["own"]
    log = pd.read_csv(folder / model_folder.SCORING_LOG)
    assert len(log) == 7 and log.data.str.contains("site_eval, cross-fitted").all()
    assert list(log.specificity) == pytest.approx([m["specificity"] for m in results["settings"].values()])
    assert "Adapted and refitted" in (folder / model_folder.CARD_FILE).read_text()


def test_the_demo_says_beside_the_verdict_where_an_adapted_model_was_adapted(adapted_folder, tiny_model_folder, site):
    from pneumo.demo.panels import verdict_card
    from pneumo.prediction.analysis import analyse

    result, _ = analyse(load_predictor(str(adapted_folder)), site / "site_001.png")
    facts = result["site_adaptation"]
    assert (facts["images"], facts["image_count"]) == (str(site), SITE_IMAGES)
    card = verdict_card("tiny-site", result, None)
    assert f"Adapted without labels to 100 X-rays of {site}" in card
    assert "site_adaptation" not in analyse(load_predictor(str(tiny_model_folder)), site / "site_001.png")[0]


def test_an_adapted_folder_is_not_adapted_again_nor_refitted_nor_evaluated(adapted_folder, site, labeled_site,
                                                                          tmp_path, capsys):
    from pneumo.site.adapt import main as adapt
    from pneumo.site.refit import main as calibrate
    from pneumo.site.site_eval import main as site_eval

    assert adapt([str(adapted_folder), "--images", str(site), "--out", str(tmp_path / "twice")]) == 1
    assert calibrate([str(adapted_folder), "--data", str(labeled_site), "--out", str(tmp_path / "refit")]) == 1
    assert site_eval([str(adapted_folder), "--data", str(labeled_site)]) == 1
    errors = capsys.readouterr().err
    assert errors.count("adapt its source") == 2 and "refit its source" in errors
    assert not (tmp_path / "twice").exists() and not (tmp_path / "refit").exists()
