"""Heatmaps drawn over the X-ray, and their colour scale (any method's: Grad-CAM or integrated gradients)."""

from __future__ import annotations

import cv2
import numpy as np

from ..imaging.decoding import DECODER_SCALE

OVERLAY_SIDE = 448  # heatmaps are drawn over the X-ray at this size, sharper than the model's input


def overlay_backdrop(gray: np.ndarray, side: int = OVERLAY_SIDE) -> np.ndarray:
    """The decoded X-ray (as decoding scales it, whatever a model's normalisation) at `side` x `side`."""
    return DECODER_SCALE.model_input(gray, side, side)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, opacity: float = 0.4) -> np.ndarray:
    """The heatmap in OpenCV's JET colours blended over the image; uint8 RGB of the image's size."""
    height, width = image.shape[:2]
    base = without_heatmap(image)
    resized = cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_CUBIC)
    colours = cv2.applyColorMap((np.clip(resized, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(colours, opacity, base, 1.0 - opacity, 0.0)


def is_empty(heatmap: np.ndarray) -> bool:
    """Whether a heatmap has no positive value: nothing in the image adds to its class by the method's measure
    (scaled to its peak, such a map would be drawn as a flat tint, as if it were one)."""
    return not float(np.max(heatmap)) > 0


def empty_heatmap_note(class_name: str, method: str) -> str:
    """What is shown instead of an empty heatmap (`is_empty`), on the page, in the PDF and in the API."""
    return (f"No heatmap: {method} finds no region of this X-ray that adds to this model's score for {class_name} "
            "(every region's contribution is zero or against it), so there is nothing to colour. The decision "
            "rests on the image as a whole, which a map of where the evidence lies cannot show.")


def without_heatmap(image: np.ndarray) -> np.ndarray:
    """The image alone, uint8 RGB: what is drawn where the heatmap is empty."""
    gray = image[..., 0] if image.ndim == 3 else image
    return np.repeat((np.clip(gray, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)


def colour_scale(width: int = 256, height: int = 12) -> np.ndarray:
    """The heatmaps' colours from no contribution (left) to the strongest (right), uint8 RGB: the legend."""
    ramp = np.repeat(np.linspace(0, 255, width).astype(np.uint8)[None], height, axis=0)
    return cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
