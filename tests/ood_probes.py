"""Pictures a public demo receives instead of chest X-rays, made from files matplotlib ships: what choosing a
model's out-of-distribution layer (docs/experiments/ood_layer.py) and its tests check the layer against."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

SAMPLE_DATA = Path(matplotlib.get_data_path()) / "sample_data"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def not_chest_xrays() -> dict[str, bytes]:
    """Pictures a public demo receives instead of chest X-rays: photos and a logo that matplotlib ships, an
    MRI slice it ships too, a text page and a solid colour rendered here."""
    page = Image.new("RGB", (600, 800), "white")
    draw = ImageDraw.Draw(page)
    for line in range(40):
        draw.text((40, 20 + 19 * line), f"Discharge summary, line {line}: admitted with cough and fever.", fill="black")
    mri = np.frombuffer(gzip.open(SAMPLE_DATA / "s1045.ima.gz").read(), np.uint16)[-256 * 256:].reshape(256, 256)
    return {"portrait photo": (SAMPLE_DATA / "grace_hopper.jpg").read_bytes(),
            "product photo": (SAMPLE_DATA / "Minduka_Present_Blue_Pack.png").read_bytes(),
            "logo": (SAMPLE_DATA / "logo2.png").read_bytes(),
            "MRI slice": _png(Image.fromarray((mri / mri.max() * 255).astype(np.uint8))),
            "text page": _png(page),
            "red square": _png(Image.new("RGB", (300, 300), (255, 0, 0)))}
