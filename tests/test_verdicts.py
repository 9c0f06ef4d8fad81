"""What a person reads next to a prediction: decisions with their thresholds, limits in words, agreement."""

import html
import json

import numpy as np

import pytest

from pneumo.demo.verdicts import (agreement, explained_class_warning, in_words, limits_sentence, measured_limits, percent,
                             percent_pair, targets_not_met, verdict)

CLASSES = ["NORMAL", "PNEUMONIA"]


def result(probability, threshold, explained="PNEUMONIA"):
    return {"label": "PNEUMONIA" if probability >= threshold else "NORMAL", "positive_class": "PNEUMONIA",
            "probabilities": {"NORMAL": 1 - probability, "PNEUMONIA": probability}, "threshold": threshold,
            "explained_class": explained}


def write_metrics(folder, split, confusion, **values):
    folder.mkdir(exist_ok=True)
    (folder / f"metrics_{split}.json").write_text(json.dumps({"confusion_matrix": confusion, **values}))
    return folder


@pytest.mark.parametrize("probability, text", [(0.85, "85%"), (0.9999, ">99.9%"), (1.0, ">99.9%"), (0.0, "<0.1%"),
                                               (0.996, "99.6%"), (0.004, "0.4%"), (0.5, "50%")])
def test_probabilities_are_percentages_that_never_claim_certainty(probability, text):
    assert percent(probability) == text


def test_a_probability_just_below_its_threshold_shows_enough_decimals_to_say_so():
    assert percent_pair(0.8652, 0.8657) == ("86.5%", "86.6%")
    assert percent_pair(0.2, 0.48) == ("20%", "48%")


def test_the_verdict_puts_the_decision_where_its_probability_and_threshold_are():
    assert verdict(result(0.85, 0.866)) == "PNEUMONIA 85%, below this model's 87% threshold → NORMAL"
    assert verdict(result(0.99, 0.48)) == "PNEUMONIA 99%, at or above this model's 48% threshold → PNEUMONIA"


@pytest.mark.parametrize("fraction, words", [(0.48, "about half"), (0.325, "about a third"), (0.005, "about 1 in 200"),
                                             (0.1, "about 1 in 10"), (0.0, "none"), (0.99, "almost all")])
def test_fractions_are_said_in_words(fraction, words):
    assert in_words(fraction) == words


def test_limits_are_read_from_the_test_metrics_first_and_say_which_split(tmp_path):
    folder = write_metrics(tmp_path / "model", "validation", [[180, 12], [5, 549]])
    write_metrics(folder, "test", [[112, 122], [2, 388]])
    limits = measured_limits(folder, CLASSES, "PNEUMONIA")
    assert (limits.split, limits.negatives, limits.false_positives, limits.positives, limits.false_negatives) == \
        ("test", 234, 122, 390, 2)
    assert limits_sentence(limits) == ("Measured on the official test set, this model flags about half of normal X-rays "
                                       "as pneumonia (122 of 234) and misses about 1 in 200 pneumonia X-rays (2 of 390).")


def test_a_folder_with_validation_metrics_only_says_the_test_set_was_not_scored(tmp_path):
    limits = measured_limits(write_metrics(tmp_path / "model", "validation", [[180, 12], [5, 549]]), CLASSES, "PNEUMONIA")
    assert "validation split (the official test set was not scored)" in limits_sentence(limits)


def test_a_folder_without_metrics_says_its_limits_are_unknown(tmp_path):
    assert measured_limits(tmp_path, CLASSES, "PNEUMONIA") is None
    assert "unknown" in limits_sentence(None)


def test_agreement_carries_the_errors_behind_each_answer(tmp_path):
    limits = {"A": measured_limits(write_metrics(tmp_path / "a", "test", [[112, 122], [2, 388]]), CLASSES, "PNEUMONIA"),
              "B": measured_limits(write_metrics(tmp_path / "b", "test", [[158, 76], [3, 387]]), CLASSES, "PNEUMONIA")}
    agreed = agreement({"A": result(0.9, 0.5), "B": result(0.95, 0.5)}, limits)
    assert agreed.agree and agreed.headline == "Both models agree: PNEUMONIA."
    assert agreed.caveat == ("Agreement is not confirmation: on the official test set, A flags about half of normal "
                             "X-rays as pneumonia (122 of 234); B flags about a third of normal X-rays as pneumonia "
                             "(76 of 234).")
    split = agreement({"A": result(0.9, 0.5), "B": result(0.2, 0.5)}, limits)
    assert not split.agree and split.headline == "The models disagree on this image (A says PNEUMONIA; B says NORMAL)."
    assert "B misses about 1 in 150 pneumonia X-rays (3 of 390)" in split.caveat


def test_a_heatmap_of_a_class_with_almost_no_probability_is_flagged():
    assert explained_class_warning(result(0.999, 0.5, explained="PNEUMONIA")) is None
    assert "almost no evidence" in explained_class_warning(result(0.9995, 0.5, explained="NORMAL"))


def test_the_targets_not_met_come_from_the_test_metrics(tmp_path):
    folder = write_metrics(tmp_path / "model", "test", [[112, 122], [2, 388]], accuracy=0.95, roc_auc=0.953,
                           specificity=0.479, expected_calibration_error=0.183)
    assert targets_not_met(folder) == ["ROC-AUC 0.953 (target ≥ 0.97)", "specificity 0.479 (target ≥ 0.88)",
                                       "calibration error (ECE) 0.183 (target ≤ 0.05)"]


def test_a_calibration_error_below_its_target_meets_it(tmp_path):
    folder = write_metrics(tmp_path / "model", "test", [[220, 14], [2, 388]], accuracy=0.97, roc_auc=0.99,
                           specificity=0.94, expected_calibration_error=0.03)
    assert targets_not_met(folder) == []


def flagged(result_dict):
    """The result of an image out of distribution: the label and probabilities kept, no verdict."""
    return {**result_dict, "verdict": "not a chest X-ray?", "out_of_distribution": True}


def test_an_image_out_of_distribution_gets_no_verdict_anywhere_and_no_advice_for_a_clinician():
    from pneumo.demo.handlers import label_value
    from pneumo.demo.panels import banner_text, decision_panel, verdict_card

    photo = {"A": flagged(result(0.998, 0.5)), "B": flagged(result(0.9, 0.5))}
    assert agreement(photo, {}) is None
    panel, banner = decision_panel(photo, {}), banner_text(photo, {})
    for text in (panel, banner):
        assert "A and B were trained on" in text and "so they give no verdict" in text
        assert "clinician" not in text and "PNEUMONIA" not in text
    card = verdict_card("A", photo["A"], None)
    assert "not a chest X-ray?" in card and "pneumo-bar" not in card and "PNEUMONIA" not in card
    assert verdict(photo["A"]).startswith("No verdict: this image does not look like the chest X-rays")
    assert label_value(photo["A"]) == {"decision": "not a chest X-ray?", "probabilities": None}
    # One model flags it, the other gives a verdict: said, and still no clinician.
    mixed = {"A": flagged(result(0.998, 0.5)), "B": {**result(0.9, 0.5), "verdict": "PNEUMONIA"}}
    banner = banner_text(mixed, {})
    assert "so it gives no verdict" in banner and "B still gives one, which means little" in banner
    assert "clinician" not in banner


def test_the_label_output_leads_with_the_verdict_even_against_the_larger_probability():
    from pneumo.demo.handlers import DecisionLabel, label_value

    below = {**result(0.84, 0.86), "verdict": "NORMAL"}
    data = DecisionLabel().postprocess(label_value(below))
    assert data.label == "NORMAL"
    assert [(entry.label, round(entry.confidence, 2)) for entry in data.confidences] == [("NORMAL", 0.16),
                                                                                       ("PNEUMONIA", 0.84)]
    photo = DecisionLabel().postprocess(label_value(flagged(result(0.998, 0.5))))
    assert photo.label == "not a chest X-ray?" and not photo.confidences


def test_the_bar_has_a_legend_that_says_what_the_bar_and_the_tick_are():
    from pneumo.demo.panels import verdict_card

    card = verdict_card("A", {**result(0.84, 0.86), "verdict": "NORMAL"}, None)
    assert "Bar: P(PNEUMONIA) 84%. Tick: this model&#x27;s threshold, 86%." in card


def test_an_empty_heatmap_is_said_on_the_page_and_in_the_pdf_and_not_drawn(tiny_model_folder, monkeypatch, tmp_path):
    """Grad-CAM's map of a class is empty where every region counts against it (10 of 20 normal test X-rays for
    the ResNet50's NORMAL): the X-ray is shown alone, and the page, the PDF and the API say why."""
    from pypdf import PdfReader

    from conftest import synthetic_xray
    from PIL import Image
    from pneumo.demo.panels import heatmap_caption
    from pneumo.demo.pdf_report import report
    from pneumo.explain.overlays import without_heatmap
    from pneumo.imaging.decoding import DecodedFile
    from pneumo.prediction.analysis import analyse, heatmap_backdrop
    from pneumo.prediction.predictor import Predictor

    predictor = Predictor.from_folder(tiny_model_folder)
    explain = predictor.predict_and_explain
    monkeypatch.setattr(predictor, "predict_and_explain",
                        lambda image, class_name=None: (explain(image, class_name)[0],
                                                        np.zeros_like(explain(image, class_name)[1])))
    source = tmp_path / "xray.png"  # like the tiny model's training images: not out of distribution to it
    Image.fromarray(synthetic_xray(seed=5)).save(source)
    result, overlay = analyse(predictor, source)
    assert not result["out_of_distribution"]
    assert result["heatmap_note"].startswith(f"No heatmap: Grad-CAM finds no region of this X-ray that adds to this "
                                             f"model's score for {result['explained_class']}")
    assert np.array_equal(overlay, without_heatmap(heatmap_backdrop(DecodedFile(source))))
    caption = heatmap_caption(result)
    assert html.escape(result["heatmap_note"]) in caption and "colour scale" not in caption
    pdf = report({"Tiny": predictor}, source, {}, tmp_path / "report.pdf")
    text = " ".join(" ".join(page.extract_text().split()) for page in PdfReader(pdf).pages)
    assert "Grad-CAM (" in text and ": no heatmap" in text and "No heatmap: Grad-CAM finds no region" in text
    # A map with any positive value is drawn as before, without a note.
    monkeypatch.setattr(predictor, "predict_and_explain", explain)
    heatmap = explain(predictor.load_image(DecodedFile(source)))[1]
    assert (analyse(predictor, source)[0]["heatmap_note"] is None) == (np.max(heatmap) > 0)


def test_an_image_out_of_distribution_gets_no_heatmap_and_no_agreement(tiny_model_folder):
    """The tiny model, trained on synthetic images, finds a real X-ray unlike them: no verdict, so no heatmap of a
    class it did not decide, and no agreement of two such models."""
    from conftest import example_images
    from pneumo.prediction.analysis import OUT_OF_DISTRIBUTION_HEATMAP_NOTE, analyse, compare
    from pneumo.prediction.predictor import Predictor

    predictor = Predictor.from_folder(tiny_model_folder)
    result, overlay = analyse(predictor, example_images()[0])
    assert result["out_of_distribution"] and result["heatmap_note"] == OUT_OF_DISTRIBUTION_HEATMAP_NOTE
    assert np.array_equal(overlay[..., 0], overlay[..., 1])  # the X-ray alone, in grey
    summary, _ = compare({"A": predictor, "B": predictor}, example_images()[0])
    assert summary["agree"] is None
