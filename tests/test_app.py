"""The demo's client API, called with gradio_client against the app served on a loopback port."""

import glob
import tempfile
import time

import numpy as np
import pytest
from PIL import Image

import app
from conftest import EXAMPLES, bomb_png, example_images, png_bytes, true_label


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def handle(path):
    from gradio_client import handle_file

    return handle_file(str(path))


def test_the_api_names_are_stable(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/predict", "/compare", "/report"} <= set(endpoints)


def test_predict_returns_label_probabilities_threshold_model_and_revision(client):
    image = EXAMPLES / "pneumonia_person142_bacteria_683.jpeg"
    label, overlay, details = client.predict(handle(image), "ResNet50", None, api_name="/predict")
    assert details["label"] == label["label"] == "PNEUMONIA"
    assert details["probabilities"]["PNEUMONIA"] == pytest.approx(1 - details["probabilities"]["NORMAL"])
    assert details["model"] == "resnet50" and "revision" in details and 0 < details["threshold"] < 1
    assert np.asarray(Image.open(overlay)).shape[2] == 3


def test_predict_can_explain_the_other_class(client):
    _, _, details = client.predict(handle(example_images()[0]), "CNN+LSTM", "PNEUMONIA", api_name="/predict")
    assert details["explained_class"] == "PNEUMONIA" and details["model"] == "cnn-lstm"


def test_compare_returns_both_models_and_both_heatmaps(client):
    image = EXAMPLES / "pneumonia_person64_virus_122.jpeg"
    banner, cnn_label, cnn_overlay, cnn, res_label, res_overlay, res, summary = client.predict(
        handle(image), api_name="/compare")
    assert set(summary["models"]) == {"CNN+LSTM", "ResNet50"}
    assert cnn["label"] == res["label"] == true_label(image)
    assert summary["agree"] and "agree" in banner
    for overlay in (cnn_overlay, res_overlay):
        assert Image.open(overlay).size == (448, 448)


def test_report_is_a_pdf_with_the_metadata_and_both_predictions(client):
    from pypdf import PdfReader

    before = set(glob.glob(f"{tempfile.gettempdir()}/pneumo-served-*"))
    pdf = client.predict(handle(EXAMPLES / "pneumonia_person142_bacteria_683.jpeg"), "Zoë Ångström", "4", "F", "2026-11-20", "Dr. Okafor",
                         "cough for 3 days", api_name="/report")
    text = "".join(page.extract_text() for page in PdfReader(pdf).pages)
    for words in ("Zoë Ångström", "2026-11-20", "Dr. Okafor", "cough for 3 days", "CNN+LSTM", "ResNet50",
                  "not a medical device", "PNEUMONIA"):
        assert words in text, words
    # The app deletes its own copy of a served file SERVED_FILE_LIFETIME_S after serving it.
    deadline = time.monotonic() + app.SERVED_FILE_LIFETIME_S + 20
    while set(glob.glob(f"{tempfile.gettempdir()}/pneumo-served-*")) - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert set(glob.glob(f"{tempfile.gettempdir()}/pneumo-served-*")) <= before


def test_a_picture_that_is_not_a_chest_xray_is_flagged_in_the_banner_the_details_and_the_pdf(client, tmp_path):
    from pypdf import PdfReader

    from test_ood import not_chest_xrays

    page = tmp_path / "discharge-summary.png"
    page.write_bytes(not_chest_xrays()["text page"])
    banner, *_, summary = client.predict(handle(page), api_name="/compare")
    assert "does not look like the chest X-rays" in banner
    assert all(result["out_of_distribution"] and result["ood_score"] > 1 for result in summary["models"].values())
    pdf = client.predict(handle(page), "", "", "", "", "", "", api_name="/report")
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(pdf).pages).split())  # lines wrap anywhere
    assert "does not look like the chest X-rays" in text
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
def test_a_bad_upload_gets_a_readable_error_and_the_app_keeps_serving(client, tmp_path, name):
    from gradio_client.exceptions import AppError

    path = tmp_path / name
    path.write_bytes(BAD_UPLOADS[name])
    with pytest.raises(AppError) as raised:
        client.predict(handle(path), api_name="/compare")
    assert name in str(raised.value) and "Traceback" not in str(raised.value)
    _, _, details = client.predict(handle(example_images()[0]), "CNN+LSTM", None, api_name="/predict")
    assert details["label"] in ("NORMAL", "PNEUMONIA")
