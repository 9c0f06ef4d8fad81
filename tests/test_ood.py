"""The out-of-distribution check: its statistics, its place in the model folder, and what the real models
flag (photos, documents, an MRI slice: yes; real chest X-rays: rarely)."""

import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import BUNDLED_MODELS, REPO, example_images, png_bytes, synthetic_xray
from pneumo.hub import model_folder
from pneumo.errors import ModelLoadError
from pneumo.prediction.ood import MAX_DIMENSIONS, FeatureReference, features_of
from ood_probes import not_chest_xrays
from pneumo.prediction.predictor import Predictor

TEST_SET = REPO.parent / "shared" / "data" / "chest_xray" / "test"


def test_the_threshold_flags_the_chosen_fraction_of_validation_and_far_points():
    rng = np.random.default_rng(0)
    training, validation = rng.normal(size=(2000, 16)), rng.normal(size=(1000, 16))
    reference = FeatureReference.fit(training, validation)
    assert (reference.scores(validation) > 1).sum() == 10  # the 99th percentile: 1% of 1,000
    assert (reference.scores(rng.normal(size=(1000, 16))) > 1).mean() < 0.03
    assert reference.scores(np.full((1, 16), 4.0))[0] > 5


def test_wide_features_are_projected_and_the_reference_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    training, validation = rng.normal(size=(600, 300)), rng.normal(size=(200, 300))
    reference = FeatureReference.fit(training, validation)
    assert reference.projection.shape == (300, MAX_DIMENSIONS)
    reference.save(tmp_path / "reference.npz")
    loaded = FeatureReference.load(tmp_path / "reference.npz")
    assert loaded.scores(validation) == pytest.approx(reference.scores(validation), rel=1e-4)


def test_export_records_the_check_and_both_paths_score_alike(tiny_model_folder):
    config = model_folder.read_config(tiny_model_folder)
    assert config["out_of_distribution"]["layer"] == config["explanation"]["layer"]
    assert (tiny_model_folder / model_folder.OOD_REFERENCE_FILE).exists()
    predictor = Predictor.from_folder(tiny_model_folder)
    image = predictor.load_image(png_bytes(synthetic_xray(96, seed=5)))
    plain = predictor.predict_image(image)
    explained, _ = predictor.predict_and_explain(image)
    assert plain.ood_score == pytest.approx(explained.ood_score, rel=1e-3)
    result = plain.to_dict()
    assert result["out_of_distribution"] == (plain.ood_score > 1) and result["ood_score"] == round(plain.ood_score, 3)


def test_features_of_several_layers_in_one_pass_equal_each_layer_alone(tiny_model_folder):
    predictor = Predictor.from_folder(tiny_model_folder)
    sources = [png_bytes(synthetic_xray(96, seed=seed)) for seed in range(3)]
    shape = (predictor.height, predictor.width, predictor.preprocessing)
    layers = [predictor.ood_layer, predictor.logits_layer]
    together = features_of(predictor.model, layers, sources, *shape, batch_size=2)
    for layer, features in zip(layers, together):
        alone = features_of(predictor.model, [layer], sources, *shape)[0]
        assert features.shape == alone.shape and features.shape[0] == 3
        assert np.allclose(features, alone, atol=1e-5)


def test_a_folder_whose_reference_is_missing_is_refused(tiny_model_folder, tmp_path):
    copy = shutil.copytree(tiny_model_folder, tmp_path / "model", ignore=shutil.ignore_patterns("checkpoints"))
    (copy / model_folder.OOD_REFERENCE_FILE).unlink()
    with pytest.raises(ModelLoadError, match="out-of-distribution reference"):
        Predictor.from_folder(copy)


def test_a_folder_without_the_check_says_nothing(legacy_model_folder, tmp_path):
    copy = shutil.copytree(legacy_model_folder, tmp_path / "model")
    config = model_folder.read_config(copy)
    del config["out_of_distribution"]
    model_folder.write_config(copy, config)
    prediction = Predictor.from_folder(copy).predict_file(png_bytes(synthetic_xray(96)))
    assert prediction.ood_score is None and prediction.to_dict()["out_of_distribution"] is None


@pytest.fixture(scope="module", params=BUNDLED_MODELS, ids=lambda p: p.name)
def bundled(request, bundled_predictors):
    return bundled_predictors[request.param.name]


def test_pictures_that_are_not_chest_xrays_are_flagged(bundled):
    scores = {name: bundled.predict_file(data).ood_score for name, data in not_chest_xrays().items()}
    assert all(score > 1 for score in scores.values()), scores


def test_few_real_chest_xrays_are_flagged(bundled):
    """Every fourth X-ray of the official test set (156 images): the check's threshold, set on the
    validation split to flag 1%, flags at most 3% of X-rays from the other acquisitions."""
    files = sorted(TEST_SET.glob("*/*.jpeg"))[::4] + example_images()
    scores = np.concatenate([bundled.assess(np.stack([bundled.load_image(f) for f in files[i:i + 32]]))[1]
                             for i in range(0, len(files), 32)])
    assert len(files) >= 156 and (scores > 1).mean() <= 0.03


def test_batch_predictions_carry_the_check(tiny_model_folder, tmp_path):
    from batch_eval import main

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "xray.png").write_bytes(png_bytes(synthetic_xray(96)))
    (folder / "page.png").write_bytes(not_chest_xrays()["text page"])
    assert main([str(folder), "--model", str(tiny_model_folder), "--out", str(tmp_path / "out")]) == 0
    predictions = pd.read_csv(tmp_path / "out" / tiny_model_folder.name / "predictions.csv").set_index("file")
    assert predictions.ood_score.notna().all()
    assert list(predictions.out_of_distribution) == list(predictions.ood_score > 1)
