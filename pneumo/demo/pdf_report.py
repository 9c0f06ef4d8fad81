"""The PDF report of one X-ray: patient metadata, the image, each model's decision with its threshold and
measured limits, whether the models agree, and their heatmaps.

Built in memory and written to the path the caller gives; nothing here logs or keeps the metadata.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import unicodedata
from pathlib import Path

import numpy as np
from PIL import Image

from ..explain.overlays import colour_scale
from ..imaging.decoding import DecodedFile
from ..prediction.analysis import compare_decoded, heatmap_backdrop
from .verdicts import (
    HEATMAP_CAVEAT,
    agreement,
    explained_class_warning,
    limits_sentence,
    model_limits,
    out_of_distribution_warning,
    percent,
    shown_verdict,
    verdict,
)

DISCLAIMER = ("Research and teaching software, not a medical device. These predictions must not be used to "
              "diagnose or treat any patient and do not replace a radiologist. The models were trained on "
              "pediatric chest X-rays (ages 1-5) from one hospital.")
METADATA_FIELDS = [("patient", "Patient name or ID"), ("age", "Age"), ("sex", "Sex"), ("exam_date", "Exam date"),
                   ("physician", "Referring physician"), ("notes", "Notes")]
# Fonts for the characters DejaVu Sans lacks (Chinese, Japanese, Korean names), with the Debian package that
# installs each; the first one present that has a character prints it. PNEUMO_PDF_FONTS (paths separated by
# os.pathsep) puts others first. TrueType outlines come first: fpdf2 embeds them with the Identity-H encoding and
# a ToUnicode map, so the name is text that readers extract and search (pypdf included). Noto Sans CJK has CFF
# outlines, which fpdf2 embeds with a CMap of their own that pypdf does not follow: the name prints, but pypdf
# extracts it with a NUL before every character. WenQuanYi Micro Hei covers Chinese, Japanese kana and Korean
# Hangul; Droid Sans Fallback has no Hangul.
EXTRA_FONTS = [("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "fonts-wqy-microhei"),
               ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", "fonts-droid-fallback"),
               ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "fonts-noto-cjk")]
MISSING_GLYPH = "□"  # printed in place of a character no available font has
REVISION_CHARACTERS = 12  # a Hub commit is printed short in the table (like git), in full below it


def quiet_font_logs() -> None:
    """fpdf2 warns about missing glyphs by quoting them, and fontTools logs the glyph names it subsets: either
    would copy a patient's name into the server log. Only their errors get through (set when a report is built,
    not when this module is imported)."""
    for library in ("fpdf", "fontTools"):
        logging.getLogger(library).setLevel(logging.ERROR)


def _font_folder() -> Path:
    """DejaVu Sans, shipped with matplotlib: Latin, Greek, Cyrillic, Arabic, Hebrew and many symbols."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=None)
def font_characters(path: str) -> frozenset[int]:
    """The code points a font file (or the first font of a collection) has glyphs for."""
    from fontTools.ttLib import TTFont

    with TTFont(path, fontNumber=0, lazy=True) as font:
        return frozenset(font.getBestCmap())


def extra_font_paths() -> list[str]:
    configured = [path for path in os.environ.get("PNEUMO_PDF_FONTS", "").split(os.pathsep) if path]
    return [path for path in [*configured, *(path for path, _ in EXTRA_FONTS)] if os.path.isfile(path)]


def _printed(character: str) -> bool:
    """Whether a character needs a glyph (spaces and control characters do not)."""
    return not (character.isspace() or unicodedata.category(character).startswith("C"))


def fonts_for(texts) -> tuple[list[str], set[str]]:
    """The extra fonts needed to print `texts`, and the characters that no available font has."""
    lacking = {c for text in texts for c in text if _printed(c)
               and ord(c) not in font_characters(str(_font_folder() / "DejaVuSans.ttf"))}
    needed = []
    for path in extra_font_paths() if lacking else []:
        covered = {c for c in lacking if ord(c) in font_characters(path)}
        if covered:
            needed.append(path)
            lacking -= covered
    return needed, lacking


def _as_image(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(array)


def _column_widths(pdf, rows: list[list[str]], total: float, padding: float) -> list[float]:
    """Column widths (mm) in which no word has to be broken: each column gets its longest word, and the
    width left over goes to the columns whose cells would otherwise wrap, in proportion to their text."""
    slack = 2 * (pdf.c_margin + padding) + 1
    columns = list(zip(*rows))
    words = [max(pdf.get_string_width(word) for cell in column for word in (cell.split() or [""])) + slack
             for column in columns]
    whole = [max(pdf.get_string_width(cell) for cell in column) + slack for column in columns]
    spare = max(total - sum(words), 0)
    wanted = [max(w - m, 0) for w, m in zip(whole, words)]
    if sum(wanted) <= spare:
        return [w + (spare - sum(wanted)) / len(columns) for w in whole]
    return [m + spare * w / sum(wanted) for m, w in zip(words, wanted)]


def build_report(out_path, metadata: dict, xray: np.ndarray, results: dict, overlays: dict, limits: dict | None = None,
                 generated: dt.datetime | None = None) -> Path:
    """Write the report PDF. `results[name]` is the demo's JSON result, `overlays[name]` its heatmap image and
    `limits[name]` the model's `verdicts.MeasuredLimits` (None when its folder records none). The X-ray and the
    heatmaps are drawn three to a row."""
    from fpdf import FPDF

    quiet_font_logs()
    limits = limits if limits is not None else {name: None for name in results}
    generated = generated or dt.datetime.now(dt.timezone.utc)
    values = {key: str(metadata.get(key) or "").strip() for key, _ in METADATA_FIELDS}
    extra_fonts, unprintable = fonts_for(values.values())
    pdf = FPDF(format="A4")
    # The X-ray and the heatmaps as JPEG: a page of them stored losslessly made a 0.6-0.95 MB report.
    pdf.set_image_filter("DCTDecode")
    pdf.set_title("pneumo chest X-ray report")
    fonts = _font_folder()
    pdf.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
    for index, path in enumerate(extra_fonts):
        pdf.add_font(f"extra{index}", "", path)
    pdf.set_fallback_fonts([f"extra{index}" for index in range(len(extra_fonts))], exact_match=False)
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    width = pdf.epw

    def paragraph(text, size=9, bold=False, colour=(0, 0, 0), height=4.5):
        pdf.set_font("DejaVu", "B" if bold else "", size)
        pdf.set_text_color(*colour)
        pdf.multi_cell(width, height, text, align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0, 0, 0)

    def heading(text):
        pdf.ln(2)
        paragraph(text, size=11, bold=True, height=7)

    pdf.set_font("DejaVu", "B", 16)
    pdf.cell(width, 10, "pneumo: chest X-ray pneumonia report", new_x="LMARGIN", new_y="NEXT")
    paragraph(f"Generated {generated:%Y-%m-%d %H:%M} UTC")
    paragraph(DISCLAIMER, colour=(150, 0, 0))

    heading("Patient")
    for key, label in METADATA_FIELDS:
        value = "".join(MISSING_GLYPH if c in unprintable else c for c in values[key]) or "-"
        pdf.set_font("DejaVu", "B", 10)
        pdf.cell(45, 6, label)
        pdf.set_font("DejaVu", "", 10)
        pdf.multi_cell(width - 45, 6, value, new_x="LMARGIN", new_y="NEXT")
    if unprintable:
        fields = [label for key, label in METADATA_FIELDS if any(c in unprintable for c in values[key])]
        paragraph(f"Some characters of {', '.join(fields)} cannot be printed with this server's fonts and are shown "
                  f"as {MISSING_GLYPH}: check them against the original.", bold=True, colour=(150, 0, 0))

    heading("Predictions")
    if warning := out_of_distribution_warning(results):
        paragraph(f"Warning: {warning}", size=10, bold=True, colour=(150, 0, 0), height=5)
    if len(results) > 1 and (agreed := agreement(results, limits)):
        paragraph(("" if agreed.agree else "Warning: ") + agreed.headline, size=10, bold=True,
                  colour=(0, 0, 0) if agreed.agree else (150, 0, 0), height=5)
        paragraph(agreed.caveat)
        pdf.ln(1)
    # One column per class, in the order the first model names them (the models' own class names).
    class_names = list(next(iter(results.values()))["probabilities"]) if results else []
    rows = [["Model", "Revision", "Decision", *[f"P({name})" for name in class_names], "Threshold"]]
    long_revisions = {}
    for name, result in results.items():
        revision = str(result.get("revision") or "bundled")
        if len(revision) > REVISION_CHARACTERS:
            long_revisions[name], revision = revision, revision[:REVISION_CHARACTERS]
        rows.append([name, revision, shown_verdict(result),
                     *[percent(result["probabilities"][c]) for c in class_names], percent(result["threshold"])])
    pdf.set_font("DejaVu", "", 9)
    padding = 1
    widths = _column_widths(pdf, rows, width, padding)
    # min: widths that fill the page can add up to a rounding error more than it, which fpdf2 refuses.
    with pdf.table(col_widths=widths, width=min(sum(widths), width), align="LEFT", text_align="LEFT",
                   line_height=5, padding=padding) as table:
        for row in rows:
            table.row(row)
    if long_revisions:
        paragraph("Revisions: " + "; ".join(f"{name} {revision}" for name, revision in long_revisions.items()), size=8)
    pdf.ln(1)
    for name, result in results.items():
        paragraph(f"{name}: {verdict(result)}", bold=True)
        paragraph(limits_sentence(limits.get(name)))
    pdf.ln(2)

    side = (width - 10) / 3
    panels = [("X-ray", _as_image(xray))] + [
        (f"{name} {result.get('heatmap_method', 'heatmap')} ({result['explained_class']})"
         + (": no heatmap" if result.get("heatmap_note") else ""), _as_image(overlays[name]))
        for name, result in results.items()]
    pdf.set_font("DejaVu", "", 9)
    for start in range(0, len(panels), 3):
        if pdf.get_y() + side + 30 > pdf.page_break_trigger:
            pdf.add_page()
        top = pdf.get_y()
        for column, (caption, image) in enumerate(panels[start:start + 3]):
            x = pdf.l_margin + column * (side + 5)
            pdf.image(image, x=x, y=top, w=side, h=side)
            pdf.set_xy(x, top + side + 1)
            pdf.multi_cell(side, 4, caption)
        pdf.set_y(top + side + 10)
    scale_x = pdf.l_margin + side + 5
    pdf.set_font("DejaVu", "", 8)
    pdf.set_x(pdf.l_margin)
    pdf.cell(side + 5, 4, "Heatmap colour scale:")
    pdf.cell(8, 4, "low")
    pdf.image(Image.fromarray(colour_scale()), x=scale_x + 8, y=pdf.get_y() + 0.5, w=2 * side - 16, h=3)
    pdf.set_x(scale_x + 2 * side - 6)
    pdf.cell(10, 4, "high", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    for name, result in results.items():
        if warning := result.get("heatmap_note") or explained_class_warning(result):
            paragraph(f"{name}: {warning}", size=8, bold=True, colour=(150, 0, 0), height=4)
    positive = next(iter(results.values()))["positive_class"] if results else "the positive class"
    paragraph(f"{HEATMAP_CAVEAT} Probabilities are calibrated on each model's validation split; a model calls an "
              f"X-ray {positive} when that probability reaches the model's own threshold.", size=8, height=4)
    out_path = Path(out_path)
    pdf.output(str(out_path))
    return out_path


def report(predictors: dict, source, metadata: dict, out_path) -> Path:
    """Compare every model of `predictors` on `source` and write the PDF report to `out_path`."""
    decoded = DecodedFile(source)
    background = heatmap_backdrop(decoded)
    summary, overlays = compare_decoded(predictors, decoded, background)
    return build_report(out_path, metadata, background, summary["models"], overlays, model_limits(predictors))
