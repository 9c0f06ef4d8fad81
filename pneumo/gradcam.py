"""Grad-CAM (Selvaraju et al. 2017): where in the image the evidence for a class lies.

The class score is taken before the softmax (the "logits" layer), and the feature map is the model's last
convolutional map (its folder's explanation `layer`). A model without one is explained by integrated
gradients instead (pneumo.integrated_gradients, chosen by pneumo.explanation). This module also draws any
heatmap over the X-ray.
"""

from __future__ import annotations

import cv2
import numpy as np


class GradCam:
    def __init__(self, model, feature_layer: str, logits_layer: str = "logits", pooled_layer: str | None = None):
        """`pooled_layer` (default: `feature_layer`): the map whose grid average is returned with the scores."""
        import keras
        import tensorflow as tf

        from .ood import grid_average

        self._model = keras.Model(model.input, [model.get_layer(feature_layer).output,
                                                model.get_layer(logits_layer).output,
                                                model.get_layer(pooled_layer or feature_layer).output])
        classes = int(self._model.outputs[1].shape[-1])

        @tf.function(reduce_retracing=True)
        def logits_and_gradients(images):
            # Gradients of every class score at once: they flow back only through the layers after the
            # feature map (the head), so all classes cost little more than one.
            with tf.GradientTape(persistent=True) as tape:
                feature_map, logits, pooled_map = self._model(images, training=False)
                scores = [logits[:, index] for index in range(classes)]
            gradients = tf.stack([tape.gradient(score, feature_map) for score in scores])
            return feature_map, logits, gradients, grid_average(pooled_map)

        self._compute = logits_and_gradients

    def logits_and_heatmaps(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The class scores of one model input, a (classes, rows, cols) heatmap per class in [0, 1], and the
        pooled layer's map averaged over its grid (what the out-of-distribution check measures)."""
        feature_map, logits, gradients, pooled = self._compute(np.asarray(image[None], np.float32))
        feature_map, gradients = np.asarray(feature_map[0], np.float64), np.asarray(gradients[:, 0], np.float64)
        # The mean intensity of the gradient over each feature-map channel: how much that channel matters.
        channel_weights = gradients.mean(axis=(1, 2))
        cams = np.maximum(np.einsum("hwc,kc->khw", feature_map, channel_weights), 0.0)
        return np.asarray(logits[0], np.float64), scaled_to_peak(cams), np.asarray(pooled[0], np.float64)


def scaled_to_peak(maps: np.ndarray) -> np.ndarray:
    """Non-negative (classes, rows, cols) maps divided by each one's peak: heatmaps in [0, 1], float32 (a map
    with no positive value stays all zeros)."""
    peaks = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0).astype(np.float32)


OVERLAY_SIDE = 448  # heatmaps are drawn over the X-ray at this size, sharper than the model's input


def overlay_backdrop(gray: np.ndarray, side: int = OVERLAY_SIDE) -> np.ndarray:
    """The decoded X-ray (as decoding scales it, whatever a model's normalisation) at `side` x `side`."""
    from .imaging import DECODER_SCALE

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
