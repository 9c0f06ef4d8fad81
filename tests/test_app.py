"""The demo's client API, called with gradio_client against the app served on a loopback port."""

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import app
from pneumo.demo import handlers, server
from conftest import (BUNDLED_BY_NAME, BUNDLED_MODELS, EXAMPLES, EXTRA_DEMO_MODELS, REPO, bomb_png, example_images,
                      png_bytes, true_label)

# A name in three scripts, one of which (Linear B) no font of a Debian machine covers.
NEAR_THRESHOLD_XRAY = Path(__file__).parent / "data" / "near_threshold_xray.jpeg"
UNUSUAL_NAME = "王秀英 Ζωή 𐀀𐀁"
PRINTABLE_PART = "王秀英"


def new_client(url, downloads):
    from gradio_client import Client

    # The client's own downloads go to a folder of the test's, apart from the server's temporary folders.
    return Client(url, verbose=False, download_files=str(downloads))


@pytest.fixture(scope="module")
def client(app_url, tmp_path_factory):
    return new_client(app_url, tmp_path_factory.mktemp("client-downloads"))


@pytest.fixture(scope="module")
def disagreeing_models(bundled_predictors):
    """The bundled CNN+LSTM's network twice, with thresholds that make one call every X-ray PNEUMONIA and the other
    none: the two always disagree, whatever the network says (a threshold above 1: a probability can round to 1)."""
    from pneumo.prediction.predictor import Predictor

    bundled = bundled_predictors[BUNDLED_MODELS[0].name]
    return {"Eager": Predictor(bundled.model, {**bundled.config, "threshold": 0.0}, bundled.folder, "eager"),
            "Reluctant": Predictor(bundled.model, {**bundled.config, "threshold": 1.5}, bundled.folder, "reluctant")}


@pytest.fixture(scope="module")
def disagreeing_client(disagreeing_models, app_temp_dir, tmp_path_factory):
    demo = app.build_app(disagreeing_models)
    app.launch(demo, server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    yield new_client(demo.local_url, tmp_path_factory.mktemp("client-downloads"))
    demo.close()


def handle(path):
    from gradio_client import handle_file

    return handle_file(str(path))


def test_the_api_names_are_stable(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/predict", "/compare", "/report"} <= set(endpoints)


def parameters(client, endpoint) -> list[dict]:
    return client.view_api(print_info=False, return_format="dict")["named_endpoints"][endpoint]["parameters"]


def test_compare_and_report_take_an_optional_pair_of_models_defaulting_to_the_first_two(client, demo_predictors):
    """The documented calls (no models named) keep working: gradio_client fills in the defaults the API states."""
    names = list(demo_predictors)
    assert len(names) > 2 and names[:2] == ["CNN+LSTM", "ResNet50"]
    for endpoint, required in (("/compare", 1), ("/report", 7)):
        listed = parameters(client, endpoint)
        assert len(listed) == required + 2
        assert not any(parameter["parameter_has_default"] for parameter in listed[:1])
        assert [(p["label"], p["parameter_default"]) for p in listed[required:]] == [("Model A", "CNN+LSTM"),
                                                                                     ("Model B", "ResNet50")]
        for parameter in listed[required:]:
            assert all(name in parameter["python_type"]["type"] for name in names), parameter


def test_predict_offers_every_loaded_model_by_name(client, demo_predictors):
    model = parameters(client, "/predict")[1]
    assert model["label"] == "Model" and model["parameter_default"] == "CNN+LSTM"
    assert all(name in model["python_type"]["type"] for name in demo_predictors)


def test_predict_returns_label_probabilities_threshold_model_and_revision(client):
    image = EXAMPLES / "pneumonia_person142_bacteria_683.jpeg"
    label, overlay, details = client.predict(handle(image), "ResNet50", None, api_name="/predict")
    assert details["label"] == label["label"] == "PNEUMONIA"
    assert details["probabilities"]["PNEUMONIA"] == pytest.approx(1 - details["probabilities"]["NORMAL"])
    assert details["model"] == "resnet50" and "revision" in details and 0 < details["threshold"] < 1
    assert np.asarray(Image.open(overlay)).shape[2] == 3


def test_a_photo_gets_no_verdict_over_the_api_but_its_probabilities_stay_in_the_details(client, tmp_path):
    """A portrait is unlike the chest X-rays every bundled model was trained on: the Label says so and gives no
    class confidences (a client reading the top entry would read PNEUMONIA), the banner gives no advice to have
    it read by a clinician, and the probabilities stay in the details."""
    from ood_probes import not_chest_xrays

    photo = tmp_path / "portrait.png"
    photo.write_bytes(not_chest_xrays()["portrait photo"])
    label, _, details = client.predict(handle(photo), "ResNet50", api_name="/predict")
    assert details["out_of_distribution"] and details["verdict"] == "not a chest X-ray?"
    assert label["label"] == "not a chest X-ray?" and not label.get("confidences")
    assert set(details["probabilities"]) == {"NORMAL", "PNEUMONIA"} and details["label"] in details["probabilities"]
    banner, a_label, *_, both = client.predict(handle(photo), api_name="/compare")
    assert "no verdict" in banner and "clinician" not in banner and a_label["label"] == "not a chest X-ray?"
    assert both["agree"] is None


def test_predict_can_explain_the_other_class(client):
    _, _, details = client.predict(handle(example_images()[0]), "CNN+LSTM", "PNEUMONIA", api_name="/predict")
    assert details["explained_class"] == "PNEUMONIA" and details["model"] == "cnn-lstm"
    assert details["heatmap_method"] == "Grad-CAM"


def test_predict_runs_a_model_past_the_first_two(client, tiny_model_folder):
    label, overlay, details = client.predict(handle(example_images()[0]), EXTRA_DEMO_MODELS[0], None,
                                             api_name="/predict")
    assert details["model"] == tiny_model_folder.name and details["input_size"] == [64, 64]
    assert label["label"] == details["verdict"] and Image.open(overlay).size == (448, 448)


def test_predict_refuses_a_model_that_is_not_loaded(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Unknown model .VGG16.; choose one of CNN\+LSTM, ResNet50"):
        client.predict(handle(example_images()[0]), "VGG16", None, api_name="/predict")


def test_compare_returns_both_models_and_both_heatmaps(client):
    image = EXAMPLES / "pneumonia_person64_virus_122.jpeg"
    banner, cnn_label, cnn_overlay, cnn, res_label, res_overlay, res, summary = client.predict(
        handle(image), api_name="/compare")
    assert set(summary["models"]) == {"CNN+LSTM", "ResNet50"}
    assert cnn["label"] == res["label"] == true_label(image)
    assert summary["agree"] and "agree" in banner
    # The details keep every key clients read, and say what the page's table shows.
    assert {"label", "probabilities", "threshold", "model", "revision", "out_of_distribution", "ood_score",
            "explained_class", "seconds", "positive_class", "input_size"} <= set(cnn) and cnn["input_size"][0] > 0
    for overlay in (cnn_overlay, res_overlay):
        assert Image.open(overlay).size == (448, 448)


def test_the_heatmaps_are_sent_as_jpeg_within_a_few_grey_levels_of_the_overlay(client, demo_predictors):
    """JPEG, not PNG: about 1 ms to encode instead of 65 ms (pneumo.demo.served_files). The overlay itself, and the
    heatmap under it, are what they were; only the file sent is lossy, by under a grey level on average."""
    from pneumo.prediction.analysis import analyse

    image = EXAMPLES / "pneumonia_person64_virus_122.jpeg"
    _, _, overlay, *_ = client.predict(handle(image), api_name="/compare")
    _, expected = analyse(demo_predictors["CNN+LSTM"], image)
    sent = Image.open(overlay)
    assert sent.format == "JPEG" and overlay.endswith("heatmap-CNN-LSTM.jpeg")
    error = np.abs(np.asarray(sent, np.int16) - expected.astype(np.int16))
    assert error.mean() < 1.0 and np.percentile(error, 99) <= 4


def test_a_2048_px_jpeg_gets_the_same_probability_from_the_demo_and_from_batch_eval(client, demo_predictors,
                                                                                    tmp_path):
    """One image path: a threshold is fitted on the path it is used on. A large JPEG is where the demo and
    batch_eval.py once parted (a full decode against a reduced one). The batch side is batch_eval.py's engine,
    run on the models the demo serves (loaded once for the session)."""
    from pneumo.batch.scoring import run_folder
    from pneumo.hub.bundled import model_references
    from pneumo.imaging.decoding import DecodedFile

    folder = tmp_path / "large"
    folder.mkdir()
    large = folder / "near_threshold_2048.jpg"
    Image.open(NEAR_THRESHOLD_XRAY).convert("L").resize((2048, 2048), Image.Resampling.BICUBIC).save(large, quality=95)
    assert DecodedFile(large).for_model(224, 224).shape == (512, 512)  # the reduced decode is on the path
    run_folder(folder, tmp_path / "scored", [demo_predictors[name] for name in model_references()],
               show_progress=False)
    for display_name in model_references():
        _, _, details = client.predict(handle(large), display_name, None, api_name="/predict")
        scored = pd.read_csv(tmp_path / "scored" / details["model"] / "predictions.csv")
        assert len(scored) == 1
        assert details["probabilities"]["PNEUMONIA"] == pytest.approx(scored.probability_pneumonia[0], abs=1e-5), \
            display_name


def test_compare_runs_the_pair_it_is_given_in_that_order(client, tiny_model_folder):
    image = EXAMPLES / "pneumonia_person64_virus_122.jpeg"
    banner, a_label, a_overlay, a, b_label, b_overlay, b, summary = client.predict(
        handle(image), EXTRA_DEMO_MODELS[1], EXTRA_DEMO_MODELS[0], api_name="/compare")
    assert list(summary["models"]) == [EXTRA_DEMO_MODELS[1], EXTRA_DEMO_MODELS[0]]
    assert a["model"] == "tiny-stricter" and b["model"] == tiny_model_folder.name
    assert a["threshold"] == pytest.approx(0.5) and a_label["label"] == a["verdict"]
    # The tiny models may find a real X-ray unlike their training images: then there is no verdict to agree on.
    flagged = "not a chest X-ray?" in (a["verdict"], b["verdict"])
    assert summary["agree"] == (None if flagged else a["verdict"] == b["verdict"])
    assert all(name in banner for name in EXTRA_DEMO_MODELS)
    # By keyword, one model named: the other keeps its default.
    *_, summary = client.predict(handle(image), model_b=EXTRA_DEMO_MODELS[0], api_name="/compare")
    assert list(summary["models"]) == ["CNN+LSTM", EXTRA_DEMO_MODELS[0]]


@pytest.mark.parametrize("pair, message", [(("ResNet50", "ResNet50"), "Choose two different models"),
                                           (("ResNet50", "VGG16"), "Unknown model .VGG16.; choose one of")])
def test_compare_refuses_a_model_twice_or_one_not_loaded(client, pair, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        client.predict(handle(example_images()[0]), *pair, api_name="/compare")


def test_the_handlers_compare_the_first_two_models_unless_told_otherwise(demo_predictors):
    import gradio as gr

    image = str(example_images()[0])
    outputs = handlers.compare_models(demo_predictors, image)
    assert len(outputs) == 8 and list(outputs[-1]["models"]) == ["CNN+LSTM", "ResNet50"]
    outputs = handlers.compare_models(demo_predictors, image, "Tiny strict", "CNN+LSTM")
    assert list(outputs[-1]["models"]) == ["Tiny strict", "CNN+LSTM"]
    assert outputs[3]["heatmap_method"] == "Grad-CAM" and outputs[2].endswith("heatmap-Tiny-strict.jpeg")
    for pair, message in ((("CNN+LSTM", "CNN+LSTM"), "Choose two different models"),
                          (("VGG16", "ResNet50"),
                           f"Unknown model 'VGG16'; choose one of {', '.join(demo_predictors)}.")):
        with pytest.raises(gr.Error, match=re.escape(message)):
            handlers.compare_models(demo_predictors, image, *pair)
    with pytest.raises(gr.Error, match="Unknown model"):
        handlers.predict(demo_predictors, image, "VGG16", None)


def test_a_model_whose_network_failed_to_load_says_so_and_the_others_keep_answering(tiny_model_folder, tmp_path,
                                                                                     app_temp_dir):
    """The demo serves its page before the networks load (pneumo.hub.bundled): a network that then fails to load is
    reported to each request for that model, by the model's folder, not as a bad upload."""
    import gradio as gr

    from pneumo.prediction.predictor import Predictor

    damaged = shutil.copytree(tiny_model_folder, tmp_path / "damaged")
    (damaged / "model.weights.h5").write_bytes(b"not an HDF5 file")
    predictors = {"Damaged": Predictor.from_folder(damaged, defer_network=True),
                  "Tiny": Predictor.from_folder(tiny_model_folder, defer_network=True)}
    image = str(example_images()[0])
    with pytest.raises(gr.Error, match=f"{re.escape(str(damaged))}: cannot be loaded as a Keras model"):
        handlers.predict(predictors, image, "Damaged", None)
    assert handlers.predict(predictors, image, "Tiny", None)[2]["label"] in ("NORMAL", "PNEUMONIA")


def test_the_about_tab_tables_every_model_with_its_heatmap_method_and_metrics(app_url, demo_predictors):
    config = json.loads(urllib.request.urlopen(f"{app_url.rstrip('/')}/config", timeout=30).read())
    about = next(component["props"]["value"] for component in config["components"]
                 if "| Model | Architecture |" in str(component.get("props", {}).get("value")))
    rows = [line for line in about.splitlines() if line.startswith("| ") and "Architecture" not in line]
    for name in demo_predictors:
        validation, test = [row for row in rows if row.startswith(f"| {name} |")][:2]
        assert demo_predictors[name].explanation_method in validation
        assert "validation" in validation and "test" in test
    assert {predictor.explanation_method for predictor in demo_predictors.values()} == {"Grad-CAM",
                                                                                       "integrated gradients"}
    # The bundled models were scored on the official test set, and the table shows what their folders recorded;
    # the tiny ones were not.
    header = next(line for line in about.splitlines() if "| Model | Architecture |" in line)
    columns = cells(header)[cells(header).index("Split (images)"):]
    for name, (_, folder) in BUNDLED_BY_NAME.items():
        if name in demo_predictors:
            recorded = json.loads((folder / "metrics_test.json").read_text())
            expected = [f"test ({recorded['n_images']})", *(f"{recorded[ABOUT_COLUMNS[column]]:.3f}"
                                                            for column in columns[1:])]
            assert expected in [cells(row)[-len(columns):] for row in rows if row.startswith(f"| {name} |")], name
    assert re.search(r"\| Tiny( \| ){4}test \| n/a \|", about)


# The About tab's metric columns, and the key of metrics_<split>.json each shows.
ABOUT_COLUMNS = {"Accuracy": "accuracy", "Sensitivity": "sensitivity", "Specificity": "specificity",
                 "Precision": "precision", "ROC-AUC": "roc_auc", "ECE": "expected_calibration_error"}


def cells(row: str) -> list[str]:
    """The cells of a Markdown table row, stripped."""
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def pdf_text(path) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def words(text: str) -> str:
    """The text with its line breaks and spaces collapsed (lines wrap anywhere; CJK glyphs come out spaced)."""
    return " ".join(text.split())


def report_folders() -> set:
    from pneumo.demo.served_files import gradio_cache_folder

    return set(gradio_cache_folder().glob("pneumo-report-*"))


def test_report_is_a_pdf_with_the_metadata_and_both_predictions_deleted_once_downloaded(client):
    before = report_folders()
    pdf = client.predict(handle(EXAMPLES / "pneumonia_person142_bacteria_683.jpeg"), "Zoë Ångström", "4", "F",
                         "2026-11-20", "Dr. Okafor", "cough for 3 days", api_name="/report")
    text = pdf_text(pdf)
    # Named by the day it was made, and small: its images are stored as JPEG (0.6-0.95 MB as PNG).
    assert re.fullmatch(r"pneumo-report-\d{4}-\d\d-\d\d-\d{4}\.pdf", Path(pdf).name), Path(pdf).name
    assert Path(pdf).stat().st_size < 300_000
    for expected in ("Zoë Ångström", "2026-11-20", "Dr. Okafor", "cough for 3 days", "CNN+LSTM", "ResNet50",
                     "not a medical device", "PNEUMONIA", "threshold", "The heatmap shows where the model looked",
                     "CNN+LSTM Grad-CAM", "ResNet50 Grad-CAM"):
        assert expected in words(text), expected
    assert "Tiny" not in text
    # Probabilities at a sensible precision: never a bare 1.000 / 0.000 (nor 100% / 0%).
    assert not re.search(r"\b[01]\.000\b|\b100%|(?<![.\d<])0%", text)
    # Table words are whole: no column is narrower than its longest word.
    assert {"P(NORMAL)", "P(PNEUMONIA)", "Threshold", "Decision", "Revision", "bundled"} <= set(text.split())
    # The client has downloaded it: the server's only copy is gone (deleted just after it was sent).
    deadline = time.monotonic() + 30
    while report_folders() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not report_folders() - before


def test_the_report_holds_the_pair_it_is_given(client):
    pdf = client.predict(handle(example_images()[0]), "", "", "", "", "", "", EXTRA_DEMO_MODELS[0], "ResNet50",
                         api_name="/report")
    text = words(pdf_text(pdf))
    # The tiny model, trained on synthetic images, may find a real X-ray unlike them: then it gives no verdict.
    *_, tiny = client.predict(handle(example_images()[0]), EXTRA_DEMO_MODELS[0], api_name="/predict")
    said = "No verdict" if tiny["out_of_distribution"] else "PNEUMONIA"
    assert f"{EXTRA_DEMO_MODELS[0]}: {said}" in text and "ResNet50: PNEUMONIA" in text
    assert "CNN+LSTM" not in text and EXTRA_DEMO_MODELS[1] not in text


def test_the_report_says_when_the_models_disagree_with_each_models_verdict_and_measured_limits(
        disagreeing_client, disagreeing_models):
    from pneumo.demo.verdicts import limits_sentence, measured_limits

    pdf = disagreeing_client.predict(handle(example_images()[0]), "Test Patient", "", "", "", "", "",
                                     api_name="/report")
    text = words(pdf_text(pdf))
    assert "The models disagree on this image (Eager says PNEUMONIA; Reluctant says NORMAL)" in text
    assert re.search(r"Eager: PNEUMONIA [<>\d.]+%, at or above this model's [<>\d.]+% threshold → PNEUMONIA", text)
    assert re.search(r"Reluctant: PNEUMONIA [<>\d.]+%, below this model's [<>\d.]+% threshold → NORMAL", text)
    # The caveat, with the numbers read from the model folder's metrics.
    predictor = disagreeing_models["Eager"]
    limits = measured_limits(predictor.folder, predictor.class_names, predictor.positive_class)
    assert limits is not None and limits_sentence(limits) in text
    assert f"({limits.false_positives} of {limits.negatives})" in text


def test_the_compare_banner_says_when_the_models_disagree_and_what_their_errors_are(disagreeing_client):
    banner, *_, summary = disagreeing_client.predict(handle(example_images()[0]), api_name="/compare")
    assert summary["agree"] is False
    assert "The models disagree on this image" in banner and "on the official test set" in banner


def test_a_name_in_any_script_prints_and_reaches_no_log_and_no_temporary_file(client, caplog, capfd, app_temp_dir):
    from pneumo.demo.pdf_report import EXTRA_FONTS, extra_font_paths
    from pneumo.demo.served_files import gradio_cache_folder

    assert extra_font_paths(), f"install a CJK font for the PDF report (apt-get install {EXTRA_FONTS[0][1]}); .ci/run does"
    caplog.set_level(logging.DEBUG)
    start = time.time()
    pdf = client.predict(handle(example_images()[1]), UNUSUAL_NAME, "3", "", "", UNUSUAL_NAME, UNUSUAL_NAME,
                         api_name="/report")
    text = pdf_text(pdf)
    assert PRINTABLE_PART in "".join(text.split()) and "Ζωή" in text
    assert "cannot be printed with this server's fonts and are shown as □" in words(text)
    # The server log: every record and every line written to stdout or stderr while the report was made.
    logged = " ".join(record.getMessage() for record in caplog.records) + "".join(capfd.readouterr())
    for character in {c for c in UNUSUAL_NAME if not c.isascii() and not c.isspace()}:  # quoted one by one, too
        assert character not in logged and ascii(character)[1:-1] not in logged, character
    # Temporary files: the app's own go where Python's tempfile puts them, Gradio's (uploads, outputs, the PDF)
    # into its cache; in the tests both are in app_temp_dir, which holds nothing else. No file written since the
    # request holds the name, and no PDF is left behind.
    assert tempfile.gettempdir() == str(app_temp_dir) and gradio_cache_folder().is_relative_to(app_temp_dir.resolve())
    encodings = [part.encode(codec) for part in UNUSUAL_NAME.split() for codec in ("utf-8", "utf-16-be")]
    written = []
    for parent, _, names in os.walk(app_temp_dir):  # os.walk passes over folders that vanish meanwhile
        for name in names:
            path = Path(parent) / name
            try:
                if not path.is_file() or path.stat().st_mtime < start - 1:
                    continue
                content = path.read_bytes()
            except OSError:  # deleted meanwhile
                continue
            written.append(path)
            assert path.suffix != ".pdf" or "pneumo-report" not in str(path), path
            assert not any(encoded in content for encoded in encodings), path
    assert written, "the request wrote no temporary file where the test looks"


def test_gradio_sweeps_its_cache_of_uploads_and_images_as_served_files_says(demo_predictors):
    from pneumo.demo.served_files import CACHE_SWEEP_S

    assert app.build_app(demo_predictors).delete_cache == CACHE_SWEEP_S == (600, 3600)


def test_gradios_queue_looks_for_work_every_10_ms_not_every_millisecond(demo_predictors):
    import gradio as gr

    assert gr.Blocks().queue()._queue.sleep_when_free == 0.001  # Gradio's own, which pneumo.demo.server.QUEUE_POLL_S replaces
    assert app.build_app(demo_predictors)._queue.sleep_when_free == server.QUEUE_POLL_S == 0.01


def empty_files_at_the_top_of_gradios_cache() -> set:
    from pneumo.demo.served_files import gradio_cache_folder

    return {path for path in gradio_cache_folder().glob("tmp*") if path.is_file() and path.stat().st_size == 0}


def test_the_empty_file_gradio_leaves_on_each_call_is_swept(client):
    """gr.File(type="filepath") leaves an empty file in Gradio's cache on each call; the reaper deletes those a
    minute old every minute (here at once: the calls have ended, no upload is arriving)."""
    from pneumo.demo.served_files import remove_empty_files

    before = empty_files_at_the_top_of_gradios_cache()
    for image in example_images()[:3]:
        client.predict(handle(image), EXTRA_DEMO_MODELS[0], None, api_name="/predict")
    left = empty_files_at_the_top_of_gradios_cache() - before
    assert left, "Gradio no longer leaves an empty file per call: remove_empty_files may go"
    remove_empty_files(min_age_s=0)
    assert not empty_files_at_the_top_of_gradios_cache()


def test_the_demo_caps_glibcs_malloc_arenas(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    if not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.skip("not glibc: nothing to cap")
    assert app.limit_malloc_arenas() is True  # glibc's mallopt(M_ARENA_MAX, 2) returned 1


def test_the_arena_cap_leaves_the_environments_and_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert app.limit_malloc_arenas() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")

    def not_glibc(name):
        raise ValueError("unrecognized configuration name")

    monkeypatch.setattr(os, "confstr", not_glibc)
    assert app.limit_malloc_arenas() is False


def test_the_arenas_are_capped_before_the_models_load(monkeypatch):
    from pneumo import PneumoError

    calls = []
    monkeypatch.setattr(app, "limit_malloc_arenas", lambda: calls.append("limit_malloc_arenas"))

    def load_models(references, **options):
        calls.append("load_models")
        raise PneumoError("no models here")

    monkeypatch.setattr(app, "load_models", load_models)
    with pytest.raises(SystemExit):
        app.main([])
    assert calls == ["limit_malloc_arenas", "load_models"]


def test_the_demo_builds_and_launches_its_page_before_any_network_loads(monkeypatch):
    """The page comes from what each model folder says; the networks load once it is served (pneumo.hub.bundled)."""
    from pneumo.hub import model_folder

    loads, launched = [], []
    load = model_folder.load_network
    monkeypatch.setattr(model_folder, "load_network", lambda *args: loads.append(args[0]) or load(*args))
    monkeypatch.setattr(app, "limit_malloc_arenas", lambda: None)
    monkeypatch.setattr(app, "launch", lambda demo, **options: launched.append((demo.is_running, list(loads))))
    app.main([])
    assert launched == [(False, [])] and not loads  # never served here, so never loaded


# A demo with the app's upload and served files, launched by app.launch, in a process of its own.
SMALL_DEMO = """
import sys
import gradio as gr
import numpy as np
import app
from pneumo.demo.served_files import CACHE_SWEEP_S, served_png

with gr.Blocks(delete_cache=CACHE_SWEEP_S) as demo:
    upload = gr.File(type="filepath")
    picture = gr.Image(type="filepath")
    upload.change(lambda path: served_png(np.zeros((8, 8), np.uint8), "xray"), upload, picture, api_name="show")
app.launch(demo, server_name="127.0.0.1", server_port=int(sys.argv[1]), quiet=True)
"""


def test_sigterm_stops_the_demo_with_status_0_and_leaves_nothing_in_gradios_cache(tmp_path):
    from gradio_client import Client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = tmp_path / "gradio"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(cache), "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    demo = subprocess.Popen([sys.executable, "-c", SMALL_DEMO, str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + 180
        while demo.poll() is None and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        assert demo.poll() is None, demo.communicate()[0]
        client = Client(url, verbose=False, download_files=False)
        for image in example_images()[:2]:
            client.predict(handle(image), api_name="/show")
        kept = sorted(path.name for path in cache.iterdir())
        assert any(name.startswith("pneumo-served-") for name in kept) and any(name.startswith("tmp") for name in kept)
        demo.send_signal(signal.SIGTERM)
        output = demo.communicate(timeout=120)[0]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, output
    assert not [path for path in cache.rglob("*") if path.is_file()]  # uploads, served images, empty files
    assert not [path for path in cache.iterdir() if path.name.startswith(("pneumo-", "tmp"))
                or re.fullmatch("[0-9a-f]{64}", path.name)]


def test_the_browser_keeps_no_history_and_uploads_are_capped_at_the_library_limit(app_url):
    from pneumo.imaging.decoding import MAX_FILE_BYTES

    root = app_url.rstrip("/")
    config = json.loads(urllib.request.urlopen(f"{root}/config", timeout=30).read())
    assert config["run_history"] is False
    assert config["max_file_size"] == MAX_FILE_BYTES
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{root}/gradio_api/runs", timeout=30)
    assert missing.value.code == 404


def test_a_picture_that_is_not_a_chest_xray_is_flagged_in_the_banner_the_details_and_the_pdf(client, tmp_path):
    from ood_probes import not_chest_xrays

    page = tmp_path / "discharge-summary.png"
    page.write_bytes(not_chest_xrays()["text page"])
    banner, *_, summary = client.predict(handle(page), api_name="/compare")
    assert "does not look like the chest X-rays" in banner
    assert all(result["out_of_distribution"] and result["ood_score"] > 1 for result in summary["models"].values())
    pdf = client.predict(handle(page), "", "", "", "", "", "", api_name="/report")
    assert "does not look like the chest X-rays" in words(pdf_text(pdf))
    _, _, example = client.predict(handle(example_images()[0]), "CNN+LSTM", None, api_name="/predict")
    assert example["out_of_distribution"] is False


BAD_UPLOADS = {
    "pdf_renamed.png": b"%PDF-1.4 not an x-ray",
    "empty.png": b"",
    "one_pixel.png": png_bytes(np.zeros((1, 1), np.uint8)),
    "bomb.png": bomb_png(),
    "corrupt.jpeg": (EXAMPLES / "normal_IM-0039-0001.jpeg").read_bytes()[:1500],
}


@pytest.mark.parametrize("name", BAD_UPLOADS)
def test_a_bad_upload_gets_an_error_naming_the_users_file_and_the_app_keeps_serving(client, tmp_path, name, caplog,
                                                                                    capfd):
    from gradio_client.exceptions import AppError

    path = tmp_path / name
    path.write_bytes(BAD_UPLOADS[name])
    capfd.readouterr()
    caplog.set_level(logging.INFO)
    with pytest.raises(AppError) as raised:
        client.predict(handle(path), api_name="/compare")
    message = str(raised.value)
    assert message.startswith(f"{name}: ") and "Traceback" not in message
    # The server log: one line, without the file's name (a file name can be a patient's name), and no traceback.
    records = [record.getMessage() for record in caplog.records if record.name.startswith(("pneumo", "gradio"))]
    assert len(records) == 1 and "refused an upload" in records[0] and name not in records[0], records
    printed = "".join(capfd.readouterr())
    assert "Traceback" not in printed and name not in printed
    _, _, details = client.predict(handle(example_images()[0]), "CNN+LSTM", None, api_name="/predict")
    assert details["label"] in ("NORMAL", "PNEUMONIA")


def test_a_model_is_named_by_its_page_name_or_its_folders_in_any_case(client):
    image = handle(EXAMPLES / "pneumonia_person142_bacteria_683.jpeg")
    by_page = client.predict(image, "ResNet50", None, api_name="/predict")[2]
    by_folder = client.predict(image, "resnet50", None, api_name="/predict")[2]
    assert by_page["model"] == by_folder["model"] == "resnet50"
    assert by_page["probabilities"] == by_folder["probabilities"]
    summary = client.predict(image, "cnn-lstm", "RESNET50", api_name="/compare")[-1]
    assert list(summary["models"]) == ["CNN+LSTM", "ResNet50"]


def test_predict_needs_only_the_image_and_report_names_its_parameters(client):
    predict = parameters(client, "/predict")
    assert [p["parameter_has_default"] for p in predict] == [False, True, True]
    assert predict[2]["parameter_name"] == "explain_class"
    details = client.predict(handle(example_images()[0]), api_name="/predict")[2]
    assert details["model"] == "cnn-lstm" and details["explained_class"] == details["label"]
    names = [p["parameter_name"] for p in parameters(client, "/report")]
    assert names == ["path", "patient", "age", "sex", "exam_date", "physician", "notes", "model_a", "model_b"]


def test_each_endpoints_outputs_are_listed_by_name_in_one_order(client):
    """The handlers return, and app.py lists the page's components, in pneumo.demo.handlers' named orders."""
    returns = {endpoint: [r["label"] for r in client.view_api(print_info=False, return_format="dict")
                          ["named_endpoints"][endpoint]["returns"]] for endpoint in ("/compare", "/predict")}
    assert len(returns["/compare"]) == len(handlers.COMPARE_OUTPUTS)
    assert returns["/compare"][0] == "Agreement" and returns["/compare"][-1].startswith("Both models")
    assert [label.split(":")[0] for label in returns["/compare"][1:4]] == ["Model A"] * 3
    assert [label.split(":")[0] for label in returns["/compare"][4:7]] == ["Model B"] * 3
    assert returns["/predict"][0].startswith("Decision") and returns["/predict"][2] == "Details"
