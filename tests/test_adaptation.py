"""Adapting a model to a site without labels (pneumo.site.adabn, pneumo.site.adapt, batch_eval.py --adapt) and the
cross-fitted evaluation of adaptation and refitting (pneumo.site.site_eval), on the tiny models the tests train."""

import json
import shutil

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
    from pneumo.training.export import fit_adaptation_reference

    predictor = Predictor.from_folder(tiny_model_folder)
    block = predictor.config["adaptation"]
    assert block["calibration"]["fitted_on"].startswith("validation split, batch-norm statistics re-estimated")
    assert set(block["operating_points"]) == {"youden", "sensitivity_95"}
    assert block["threshold"] == block["operating_points"]["youden"]
    split = pd.read_csv(tiny_model_folder / model_folder.SPLIT_FILE)
    before = batch_norm_statistics(predictor.model)
    released_auc = model_folder.read_metrics(tiny_model_folder, "validation")["roc_auc"]
    assert block["released_validation_roc_auc"] == released_auc
    again = fit_adaptation_reference(predictor.model, split[split.split == "validation"], synthetic_dataset,
                                     predictor.height, predictor.preprocessing, predictor.positive_index, released_auc)
    assert again["threshold"] == pytest.approx(block["threshold"], abs=1e-4)
    for (mean, variance), (mean_after, variance_after) in zip(before, batch_norm_statistics(predictor.model)):
        np.testing.assert_array_equal(mean, mean_after)
        np.testing.assert_array_equal(variance, variance_after)


def test_the_adapted_folder_has_the_sites_statistics_the_same_weights_and_says_where_it_came_from(
        adapted_folder, tiny_model_folder, site):
    source, adapted = Predictor.from_folder(tiny_model_folder), load_predictor(str(adapted_folder))
    record = adapted.config["site_adaptation"]
    assert record["source_model_sha256"] == model_folder.model_file_sha256(tiny_model_folder)
    assert (record["images"], record["image_count"], record["skipped_files"]) == (str(site), SITE_IMAGES, 0)
    assert adapted.config["calibration"] == source.config["adaptation"]["calibration"]
    assert adapted.threshold == source.config["adaptation"]["threshold"]
    assert adapted.name == "tiny-site"
    # Its source's out-of-distribution reference would flag almost every X-ray through the adapted network.
    assert source.config["out_of_distribution"] and "out_of_distribution" not in adapted.config
    assert adapted.predict_file(site / "site_000.png").ood_score is None
    statistics = batch_norm_layers(adapted.model)
    for layer, (mean, _) in zip(statistics, batch_norm_statistics(source.model)):
        assert not np.allclose(layer.moving_mean, mean)  # a darker site: every layer's statistics moved
    for left, right in zip(adapted.model.weights, source.model.weights):
        if not any(name in left.path for name in ("moving_mean", "moving_variance")):
            np.testing.assert_array_equal(left, right)
    card = (adapted_folder / model_folder.CARD_FILE).read_text()
    assert "Adapted to a site" in card and str(site) in card and record["source_model_sha256"][:12] in card


def test_too_few_usable_images_are_refused_and_nothing_is_written(tiny_model_folder, tmp_path, capsys):
    from pneumo.site.adapt import main

    folder = write_site(tmp_path / "few", SITE_IMAGES - 1)
    (folder / "broken.png").write_bytes(b"not an image")
    assert main([str(tiny_model_folder), "--images", str(folder), "--out", str(tmp_path / "out")]) == 1
    assert "99 usable X-rays: adapting to a site needs at least 100" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_model_without_batch_normalisation_is_refused_before_reading_images(row_lstm_folder, site, tmp_path,
                                                                             capsys):
    from pneumo.site.adapt import main

    assert main([str(row_lstm_folder), "--images", str(site), "--out", str(tmp_path / "out")]) == 1
    assert "no batch normalisation" in capsys.readouterr().err


def test_batch_eval_adapt_scores_as_the_adapted_folder_and_says_so(tiny_model_folder, row_lstm_folder, site,
                                                                    adapted_folder, tmp_path, capsys):
    import batch_eval

    assert batch_eval.main([str(site), "--out", str(tmp_path / "adapt"), "--model", str(tiny_model_folder),
                            "--model", str(row_lstm_folder), "--adapt", "--no-figures", "--no-intervals"]) == 0
    assert batch_eval.main([str(site), "--out", str(tmp_path / "folder"), "--model", str(adapted_folder),
                            "--model", str(row_lstm_folder), "--no-figures", "--no-intervals"]) == 0
    said = capsys.readouterr().err
    assert "tiny-cnn-lstm: adapted to this folder's 100 readable images" in said
    assert "tiny-row-lstm: not adapted (its network has no batch normalisation" in said
    transductive = pd.read_csv(tmp_path / "adapt" / "tiny-cnn-lstm" / "predictions.csv")
    written = pd.read_csv(tmp_path / "folder" / "tiny-site" / "predictions.csv")
    np.testing.assert_allclose(transductive.filter(like="prob").to_numpy(), written.filter(like="prob").to_numpy(),
                               atol=1e-5)
    assert (transductive.threshold == written.threshold).all()
    metrics = json.loads((tmp_path / "adapt" / "tiny-cnn-lstm" / "metrics.json").read_text())
    assert "adapted to " + str(site) in json.dumps(metrics)
    row_lstm = [pd.read_csv(tmp_path / run / "tiny-row-lstm" / "predictions.csv") for run in ("adapt", "folder")]
    pd.testing.assert_frame_equal(*row_lstm)


def test_a_model_whose_validation_auc_the_re_estimation_lowers_is_not_adapted(tiny_model_folder, site, tmp_path,
                                                                             capsys):
    import batch_eval
    from pneumo.site.adapt import main

    folder = shutil.copytree(tiny_model_folder, tmp_path / "tiny-fixed-statistics",
                             ignore=shutil.ignore_patterns("checkpoints"))
    config = model_folder.read_config(folder)
    block = config["adaptation"]
    block["released_validation_roc_auc"] = block["validation"]["roc_auc"] + 0.011
    model_folder.write_config(folder, config)
    assert main([str(folder), "--images", str(site), "--out", str(tmp_path / "out")]) == 1
    assert "lowers its validation ROC-AUC" in capsys.readouterr().err
    assert batch_eval.main([str(site), "--out", str(tmp_path / "scored"), "--model", str(folder), "--adapt",
                            "--no-figures", "--no-intervals"]) == 0
    assert "tiny-cnn-lstm: not adapted (re-estimating its statistics" in capsys.readouterr().err
    assert "adaptation" not in json.loads((tmp_path / "scored" / "tiny-cnn-lstm" / "metrics.json").read_text())


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


def test_site_eval_scores_every_image_once_in_each_of_four_settings(tiny_model_folder, labeled_site):
    from pneumo.training.data import list_labeled_images
    from pneumo.site.site_eval import SETTINGS, cross_fitted

    predictor = Predictor.from_folder(tiny_model_folder)
    before = batch_norm_statistics(predictor.model)
    results = cross_fitted(predictor, labeled_site)
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


def test_site_eval_of_a_network_without_batch_normalisation_has_two_settings(row_lstm_folder, labeled_site):
    from pneumo.site.site_eval import cross_fitted

    results = cross_fitted(Predictor.from_folder(row_lstm_folder), labeled_site)
    assert list(results["settings"]) == ["out_of_the_box", "refit"] and not results["adaptable"]


def test_site_eval_record_keeps_the_results_and_logs_each_setting(tiny_model_folder, labeled_site, tmp_path, capsys):
    from pneumo.site.site_eval import main

    folder = shutil.copytree(tiny_model_folder, tmp_path / "tiny", ignore=shutil.ignore_patterns("checkpoints"))
    assert main([str(folder), "--data", str(labeled_site), "--record"]) == 0
    printed = capsys.readouterr().out
    assert "adapted without labels" in printed and "refit with labels" in printed
    results = json.loads((folder / model_folder.SITE_EVAL_FILE).read_text())
    log = pd.read_csv(folder / model_folder.SCORING_LOG)
    assert len(log) == 4 and log.data.str.contains("site_eval, cross-fitted").all()
    assert list(log.specificity) == pytest.approx([m["specificity"] for m in results["settings"].values()])
    assert "Adapted and refitted" in (folder / model_folder.CARD_FILE).read_text()
