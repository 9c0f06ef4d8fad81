"""The two bundled models load from their folders and give sensible, format-independent predictions."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import BUNDLED_MODELS, EXAMPLES, example_images, true_label
from pneumo.predictor import Predictor


@pytest.fixture(scope="module", params=BUNDLED_MODELS, ids=lambda p: p.name)
def predictor(request):
    return Predictor.from_folder(request.param)


def test_each_bundled_folder_is_complete(predictor):
    names = {path.name for path in predictor.folder.iterdir()}
    assert {"model.keras", "config.json", "README.md", "metrics_validation.json", "metrics_test.json"} <= names
    assert (predictor.folder / "model.keras").stat().st_size < 100 * 10**6


@pytest.mark.parametrize("image", example_images(), ids=lambda p: p.name)
def test_bundled_models_label_the_example_images_correctly(predictor, image):
    prediction = predictor.predict_file(image)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
    assert prediction.label == true_label(image)


def test_rgb_jpeg_gray_png_and_16_bit_png_agree_within_0_02(predictor, tmp_path):
    for source in example_images():
        gray = np.asarray(Image.open(source).convert("L"))
        variants = {"rgb.jpg": lambda p: Image.fromarray(np.stack([gray] * 3, -1)).save(p, quality=95),
                    "gray8.png": lambda p: Image.fromarray(gray).save(p),
                    "gray16.png": lambda p: Image.fromarray(gray.astype(np.uint16) * 257).save(p)}
        probabilities = []
        for name, write in variants.items():
            write(tmp_path / name)
            probabilities.append(predictor.predict_file(tmp_path / name).positive_probability)
        assert max(probabilities) - min(probabilities) <= 0.02, (source.name, probabilities)


def test_the_demo_and_batch_eval_give_the_same_probability(predictor):
    from pneumo.batch import discover, score

    predictions, _ = score(predictor, discover(EXAMPLES), batch_size=3)
    single = [predictor.predict_file(EXAMPLES / name).positive_probability for name in predictions.file]
    np.testing.assert_allclose(predictions.probability_pneumonia, single, rtol=0, atol=1e-6)


def test_recorded_test_metrics_come_from_the_official_test_set(predictor):
    metrics = json.loads((predictor.folder / "metrics_test.json").read_text())
    assert metrics["n_images"] == 624
    assert sum(map(sum, metrics["confusion_matrix"])) == 624
    assert metrics["threshold"] == predictor.threshold


def test_grad_cam_highlights_somewhere_inside_the_image(predictor):
    image = predictor.load_image(example_images()[-1])
    heatmap = predictor.explain(image, "PNEUMONIA")
    assert heatmap.ndim == 2 and heatmap.max() == pytest.approx(1.0)
    assert 0.0 <= heatmap.min()


TEST_SET = EXAMPLES.parents[1] / "shared" / "data" / "chest_xray" / "test"


def test_batch_scoring_of_the_test_set_reproduces_the_recorded_test_metrics(predictor, tmp_path):
    from pneumo.batch import run_folder

    if not TEST_SET.exists():
        pytest.skip("the shared dataset is not beside this checkout")
    scored = run_folder(TEST_SET, tmp_path, [predictor], show_progress=False)[predictor.name]
    recorded = json.loads((predictor.folder / "metrics_test.json").read_text())
    for key in ("n_images", "threshold", "accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc",
                "expected_calibration_error", "confusion_matrix"):
        assert scored[key] == recorded[key], key
