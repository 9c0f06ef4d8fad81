"""The PDF report built from results (no model needed): fonts for any script, whole words, honest precision."""

import logging

import numpy as np
import pytest

from pneumo.demo import pdf_report

REVISION = "0123456789abcdef0123456789abcdef01234567"


def result(probability, threshold=0.5, revision=None, heatmap_method="Grad-CAM"):
    return {"label": "PNEUMONIA" if probability >= threshold else "NORMAL", "positive_class": "PNEUMONIA",
            "probabilities": {"NORMAL": 1 - probability, "PNEUMONIA": probability}, "threshold": threshold,
            "explained_class": "PNEUMONIA", "revision": revision, "heatmap_method": heatmap_method}


def build(tmp_path, metadata, results):
    from pypdf import PdfReader

    overlays = {name: np.zeros((64, 64, 3), np.uint8) for name in results}
    path = pdf_report.build_report(tmp_path / "report.pdf", metadata, np.zeros((64, 64), np.uint8), results, overlays)
    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def test_without_a_font_for_a_script_the_report_says_what_it_cannot_print(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(pdf_report, "EXTRA_FONTS", [])
    monkeypatch.delenv("PNEUMO_PDF_FONTS", raising=False)
    caplog.set_level(logging.DEBUG)
    text = build(tmp_path, {"patient": "李雷 Lee"}, {"A": result(0.7)})
    assert "□□ Lee" in text
    assert "Some characters of Patient name or ID cannot be printed" in " ".join(text.split())
    assert not any(character in record.getMessage() for record in caplog.records for character in "李雷")


@pytest.mark.parametrize("name", ["王秀英", "山田 花子", "やまだ はなこ", "김민준", "Zoë 李雷 김민준 たろう"],
                         ids=["chinese", "japanese-kanji", "japanese-kana", "korean", "mixed"])
def test_a_chinese_japanese_or_korean_name_is_text_that_pypdf_extracts_exactly(tmp_path, name):
    """Printed with a TrueType CJK font (embedded with a ToUnicode map), the name is searchable text."""
    truetype = [path for path in pdf_report.extra_font_paths() if path.endswith(("wqy-microhei.ttc", ".ttf"))]
    assert truetype, "install a TrueType CJK font for the PDF report (apt-get install fonts-wqy-microhei); .ci/run does"
    text = build(tmp_path, {"patient": name}, {"A": result(0.7)})
    assert f"Patient name or ID {name}\n" in text
    assert pdf_report.MISSING_GLYPH not in text and "\x00" not in text


def test_probabilities_near_0_and_1_are_printed_as_bounds_and_the_table_keeps_words_whole(tmp_path):
    text = build(tmp_path, {}, {"CNN+LSTM": result(1.0, revision=REVISION), "ResNet50": result(0.0)})
    assert ">99.9%" in text and "<0.1%" in text and "1.000" not in text and "0.000" not in text
    tokens = set(text.split())
    assert {"P(NORMAL)", "P(PNEUMONIA)", "Threshold", "Decision", "Revision", "PNEUMONIA", "NORMAL",
            REVISION[:pdf_report.REVISION_CHARACTERS], "bundled"} <= tokens
    assert f"Revisions: CNN+LSTM {REVISION}" in " ".join(text.split())


@pytest.mark.parametrize("agree", [True, False])
def test_the_report_says_whether_the_models_agree(tmp_path, agree):
    text = " ".join(build(tmp_path, {}, {"A": result(0.9), "B": result(0.9 if agree else 0.1)}).split())
    assert ("Both models agree: PNEUMONIA." in text) == agree
    assert ("The models disagree on this image (A says PNEUMONIA; B says NORMAL)." in text) != agree
    assert "how often these models are wrong is not recorded" in text


def test_four_models_each_get_a_heatmap_panel_titled_with_its_method(tmp_path):
    results = {"CNN+LSTM": result(0.9), "ResNet50": result(0.8),
               "Row LSTM": result(0.7, heatmap_method="integrated gradients"), "MobileNetV2": result(0.6)}
    text = " ".join(build(tmp_path, {}, results).split())
    assert "All models agree: PNEUMONIA." in text
    for title in ("CNN+LSTM Grad-CAM (PNEUMONIA)", "Row LSTM integrated gradients (PNEUMONIA)",
                  "MobileNetV2 Grad-CAM (PNEUMONIA)", "The heatmap shows where the model looked"):
        assert title in text, title
