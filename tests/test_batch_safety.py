"""batch_eval.py against hostile input: DICOM files that break their decoder are skipped while the rest of the
folder is scored, and a model's own name never places a report outside --out."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import batch_eval
from conftest import copy_with_threshold, synthetic_xray, write_dicom
from pneumo.batch.scoring import folder_name
from test_dicom_files import GRAY, rewritten

QUICK = ("--no-figures", "--no-intervals")

HOSTILE_DICOMS = {
    "window-width-0.dcm": lambda path: write_dicom(path, GRAY, window=(500, 0)),
    "no-pixel-data.dcm": lambda path: rewritten(write_dicom(path, GRAY), PixelData=None),
    "short-pixel-data.dcm": lambda path: rewritten(write_dicom(path, GRAY), PixelData=GRAY.tobytes()[:1000]),
    "bits-allocated-65535.dcm": lambda path: rewritten(write_dicom(path, GRAY), BitsAllocated=65535),
    "samples-3.dcm": lambda path: rewritten(write_dicom(path, GRAY), SamplesPerPixel=3),
    "billion-frames.dcm": lambda path: rewritten(write_dicom(path, GRAY), NumberOfFrames=10**9),
}


def good_xrays(folder, count: int):
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(synthetic_xray(seed=i)).save(folder / f"xray{i}.png")
    return folder


def test_hostile_dicoms_are_skipped_with_a_reason_and_the_good_files_scored(tiny_model_folder, tmp_path):
    folder = good_xrays(tmp_path / "incoming", 10)
    for name, make in HOSTILE_DICOMS.items():
        make(folder / name)
    out = tmp_path / "out"
    assert batch_eval.main([str(folder), "--out", str(out), "--model", str(tiny_model_folder), *QUICK]) == 0
    predictions = pd.read_csv(out / tiny_model_folder.name / "predictions.csv")
    assert sorted(predictions.file) == [f"xray{i}.png" for i in range(10)]
    assert predictions.probability_pneumonia.between(0, 1).all()
    skipped = pd.read_csv(out / "skipped.csv").set_index("file").reason
    assert set(skipped.index) == set(HOSTILE_DICOMS)
    assert skipped.str.len().gt(0).all()
    assert "too large" in skipped["billion-frames.dcm"] and "pixel data" in skipped["no-pixel-data.dcm"]
    assert "Window Width" in skipped["window-width-0.dcm"]


@pytest.mark.parametrize("name, folder", [("cnn-lstm", "cnn-lstm"), ("CNN+LSTM v2", "CNN+LSTM v2"),
                                          ("../..", "model"), ("..", "model"), (".", "model"), ("", "model"),
                                          (".hidden", "hidden"), ("a/../../b", "a-..-..-b"), ("/etc", "etc"),
                                          ("C:\\temp", "C--temp"), ("trailing. ", "trailing")])
def test_a_model_name_becomes_one_harmless_folder_name(name, folder):
    assert folder_name(name) == folder


def test_a_model_named_dot_dot_writes_nothing_outside_out(tiny_model_folder, tmp_path):
    """A model folder (or a Hub repo) names its model in its pneumo.json: `../..` stays a folder inside --out."""
    model = copy_with_threshold(tiny_model_folder, tmp_path / "models" / "escape", "../..", 0.5)
    folder = good_xrays(tmp_path / "deep" / "images", 3)
    out = tmp_path / "deep" / "runs" / "out"

    def files_outside_out():
        return {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")
                if path.is_file() and out not in path.parents}

    before = files_outside_out()
    assert batch_eval.main([str(folder), "--out", str(out), "--model", str(model), *QUICK]) == 0
    assert files_outside_out() == before
    assert len(pd.read_csv(out / "model" / "predictions.csv")) == 3
    assert json.loads((out / "run.json").read_text())["models"]["model"]["model"] == "../.."


def test_merging_a_run_whose_models_are_not_folder_names_is_refused(tiny_model_folder, tmp_path, capsys):
    folder = good_xrays(tmp_path / "images", 2)
    run = tmp_path / "run"
    assert batch_eval.main([str(folder), "--out", str(run), "--model", str(tiny_model_folder), *QUICK]) == 0
    record = json.loads((run / "run.json").read_text())
    record["models"] = {"../../elsewhere": record["models"][tiny_model_folder.name]}
    (run / "run.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit) as exit_status:
        batch_eval.main(["merge", str(run), "--out", str(tmp_path / "merged"), *QUICK])
    assert exit_status.value.code == 2 and "../../elsewhere" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()


def test_scores_are_unchanged_by_the_hostile_neighbours(tiny_model_folder, tmp_path):
    """The good files' probabilities are those of a folder without the hostile ones."""
    clean = good_xrays(tmp_path / "clean", 4)
    mixed = good_xrays(tmp_path / "mixed", 4)
    for name, make in HOSTILE_DICOMS.items():
        make(mixed / name)
    for folder in (clean, mixed):
        assert batch_eval.main([str(folder), "--out", str(tmp_path / f"out-{folder.name}"), "--model",
                                str(tiny_model_folder), *QUICK]) == 0
    left, right = (pd.read_csv(tmp_path / f"out-{name}" / tiny_model_folder.name / "predictions.csv")
                   for name in ("clean", "mixed"))
    assert np.allclose(left.probability_pneumonia, right.probability_pneumonia, atol=1e-6)
