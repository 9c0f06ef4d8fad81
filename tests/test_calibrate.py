"""Refitting a model to a site: a model whose calibration is off (an over-confident temperature and a
threshold far from its site's best) comes back with both fitted on the site's own labeled X-rays."""

import json
import shutil

import pytest

from conftest import write_synthetic_class_folders
from pneumo.hub import model_folder
from pneumo.site.refit import main, refit
from pneumo.errors import DataFolderError
from pneumo.prediction.predictor import Predictor


@pytest.fixture(scope="module")
def miscalibrated(tiny_model_folder, tmp_path_factory):
    """The tiny model with temperature 0.05 (twenty times too confident) and threshold 0.999."""
    folder = shutil.copytree(tiny_model_folder, tmp_path_factory.mktemp("site") / "tiny-miscalibrated",
                             ignore=shutil.ignore_patterns("checkpoints"))
    config = model_folder.read_config(folder)
    config.update(threshold=0.999, calibration={**config["calibration"], "temperature": 0.05})
    model_folder.write_config(folder, config)
    return folder


@pytest.fixture(scope="module")
def site_data(tmp_path_factory):
    """A site's labeled X-rays: NORMAL/ and PNEUMONIA/, 30 synthetic images each, several per patient."""
    root = tmp_path_factory.mktemp("site-data")
    write_synthetic_class_folders(root, 30, seed=7)
    return root


@pytest.fixture(scope="module")
def refitted(miscalibrated, site_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("refit") / "tiny-site"
    assert main([str(miscalibrated), "--data", str(site_data), "--out", str(out)]) == 0
    return out


def test_the_refit_improves_calibration_on_the_site_hold_out(refitted):
    metrics = model_folder.read_metrics(refitted, model_folder.SITE_HOLDOUT_SPLIT)
    before = metrics["before_refit"]
    assert metrics["expected_calibration_error"] < before["expected_calibration_error"]
    assert metrics["n_images"] == before["n_images"] and 0 < metrics["n_images"] < 60
    assert set(metrics["confidence_intervals_95"]) >= {"accuracy", "sensitivity", "specificity"}


def test_the_new_folder_records_where_its_calibration_came_from(refitted, miscalibrated, site_data):
    config = model_folder.read_config(refitted)
    site = config["site_calibration"]
    assert site["source"] == str(miscalibrated) and site["data"] == str(site_data)
    assert site["source_model_sha256"] == model_folder.model_file_sha256(miscalibrated)
    assert site["source_calibration"]["temperature"] == 0.05 and config["calibration"]["temperature"] > 0.05
    assert site["fitting_images"] + site["holdout_images"] == 60 and site["skipped_files"] == 0
    assert config["threshold"] == config["operating_points"][config["operating_point"]] != 0.999
    assert "Refitted to a site" in (refitted / "README.md").read_text()


def test_the_network_is_unchanged_and_the_folder_loads(refitted, miscalibrated):
    import numpy as np

    from conftest import png_bytes, synthetic_xray

    image = png_bytes(synthetic_xray(96, seed=11, opacity=True))
    source, site = Predictor.from_folder(miscalibrated), Predictor.from_folder(refitted)
    inputs = source.load_image(image)[None]
    assert np.allclose(source.logits(inputs), site.logits(inputs), atol=1e-5)
    assert site.predict_file(image).ood_score == pytest.approx(source.predict_file(image).ood_score, rel=1e-3)


def test_a_site_folder_with_one_class_is_refused(miscalibrated, tmp_path):
    write_synthetic_class_folders(tmp_path / "data", 10, folder_names=("NORMAL", "OTHER"))
    with pytest.raises(DataFolderError, match="lacks a class"):
        refit(str(miscalibrated), tmp_path / "data", tmp_path / "out")


def test_an_existing_output_folder_is_not_overwritten(miscalibrated, site_data, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main([str(miscalibrated), "--data", str(site_data), "--out", str(tmp_path / "out")]) == 1
    assert "not empty" in capsys.readouterr().err and (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_the_command_prints_before_and_after(miscalibrated, site_data, tmp_path, capsys):
    assert main([str(miscalibrated), "--data", str(site_data), "--out", str(tmp_path / "site")]) == 0
    printed = capsys.readouterr().out
    assert "hold-out before:" in printed and "hold-out after:" in printed
    assert json.loads(printed[:printed.index("hold-out before")])["holdout_images"] > 0
