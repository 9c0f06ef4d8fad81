"""The PDF report of one X-ray: patient metadata, the image, each model's prediction and Grad-CAM.

Built in memory and written to the path the caller gives; nothing here logs or keeps the metadata.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from PIL import Image

from .ood import out_of_distribution_warning

DISCLAIMER = ("Research and teaching software, not a medical device. These predictions must not be used to "
              "diagnose or treat any patient and do not replace a radiologist. The models were trained on "
              "pediatric chest X-rays (ages 1-5) from one hospital.")
METADATA_FIELDS = [("patient", "Patient name or ID"), ("age", "Age"), ("sex", "Sex"), ("exam_date", "Exam date"),
                   ("physician", "Referring physician"), ("notes", "Notes")]


def _font_folder() -> Path:
    """DejaVu Sans, shipped with matplotlib: a Unicode font, so any patient name prints."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _as_image(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(array)


def build_report(out_path, metadata: dict, xray: np.ndarray, results: dict, overlays: dict,
                 generated: dt.datetime | None = None) -> Path:
    """Write the report PDF. `results[name]` is the demo's JSON result, `overlays[name]` its Grad-CAM image."""
    from fpdf import FPDF

    generated = generated or dt.datetime.now(dt.timezone.utc)
    pdf = FPDF(format="A4")
    fonts = _font_folder()
    pdf.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    width = pdf.epw

    pdf.set_font("DejaVu", "B", 16)
    pdf.cell(width, 10, "pneumo: chest X-ray pneumonia report", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 9)
    pdf.cell(width, 5, f"Generated {generated:%Y-%m-%d %H:%M} UTC", new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(150, 0, 0)
    pdf.multi_cell(width, 4.5, DISCLAIMER, new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    pdf.ln(2)

    pdf.set_font("DejaVu", "B", 11)
    pdf.cell(width, 7, "Patient", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 10)
    for key, label in METADATA_FIELDS:
        value = str(metadata.get(key) or "").strip() or "-"
        pdf.set_font("DejaVu", "B", 10)
        pdf.cell(45, 6, label)
        pdf.set_font("DejaVu", "", 10)
        pdf.multi_cell(width - 45, 6, value, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)

    pdf.set_font("DejaVu", "B", 11)
    pdf.cell(width, 7, "Predictions", new_x="LMARGIN", new_y="NEXT")
    if warning := out_of_distribution_warning(results):
        pdf.set_font("DejaVu", "B", 10)
        pdf.set_text_color(150, 0, 0)
        pdf.multi_cell(width, 5, f"Warning: {warning}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0, 0, 0)
    # One column per class, in the order the first model names them (the models' own class names).
    class_names = list(next(iter(results.values()))["probabilities"]) if results else []
    probability_width = 66 / max(len(class_names), 1)
    with pdf.table(col_widths=(28, 40, 22, *[probability_width] * len(class_names), 18), text_align="LEFT",
                   line_height=6) as table:
        table.row(["Model", "Revision", "Prediction", *[f"P({name.lower()})" for name in class_names], "Threshold"])
        for name, result in results.items():
            table.row([name, str(result.get("revision") or "bundled"), result["label"],
                       *[f"{result['probabilities'][c]:.3f}" for c in class_names], f"{result['threshold']:.3f}"])
    pdf.ln(3)

    side = (width - 10) / 3
    top = pdf.get_y()
    pdf.set_font("DejaVu", "", 9)
    panels = [("X-ray", _as_image(xray))] + [(f"{name} Grad-CAM ({results[name]['explained_class']})",
                                               _as_image(overlays[name])) for name in results]
    for column, (caption, image) in enumerate(panels):
        x = pdf.l_margin + column * (side + 5)
        pdf.image(image, x=x, y=top, w=side, h=side)
        pdf.set_xy(x, top + side + 1)
        pdf.multi_cell(side, 4, caption)
    pdf.set_y(top + side + 12)
    pdf.set_font("DejaVu", "", 8)
    pdf.multi_cell(width, 4, "Grad-CAM marks the regions whose features raised the score of the named class; "
                   "it shows where the model looked, not proof of disease. Probabilities are calibrated on a "
                   "validation split; the decision threshold of each model is in its model card.")
    out_path = Path(out_path)
    pdf.output(str(out_path))
    return out_path
