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
    gray = image[..., 0] if image.ndim == 3 else image
    base = np.repeat((np.clip(gray, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    resized = cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_CUBIC)
    colours = cv2.applyColorMap((np.clip(resized, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(colours, opacity, base, 1.0 - opacity, 0.0)


def colour_scale(width: int = 256, height: int = 12) -> np.ndarray:
    """The heatmaps' colours from no contribution (left) to the strongest (right), uint8 RGB: the legend."""
    ramp = np.repeat(np.linspace(0, 255, width).astype(np.uint8)[None], height, axis=0)
    return cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
