"""Grad-CAM (Selvaraju et al. 2017): where in the image the evidence for a class lies.

The class score is taken before the softmax (the "logits" layer), and the feature map is the model's last
convolutional map (its config's `gradcam_layer`).
"""

from __future__ import annotations

import cv2
import numpy as np


class GradCam:
    def __init__(self, model, feature_layer: str, logits_layer: str = "logits"):
        import keras
        import tensorflow as tf

        self._model = keras.Model(model.input, [model.get_layer(feature_layer).output,
                                                model.get_layer(logits_layer).output])

        @tf.function(reduce_retracing=True)
        def feature_map_and_gradients(images, class_index):
            with tf.GradientTape() as tape:
                feature_map, logits = self._model(images, training=False)
                score = logits[:, class_index]
            return feature_map, tape.gradient(score, feature_map)

        self._compute = feature_map_and_gradients

    def heatmap(self, image: np.ndarray, class_index: int) -> np.ndarray:
        """A (rows, cols) map in [0, 1] over the feature-map grid for one model input."""
        feature_map, gradients = self._compute(np.asarray(image[None], np.float32), class_index)
        feature_map, gradients = np.asarray(feature_map[0]), np.asarray(gradients[0])
        # The mean intensity of the gradient over each feature-map channel: how much that channel matters.
        channel_weights = gradients.mean(axis=(0, 1))
        cam = np.maximum(feature_map @ channel_weights, 0.0)
        peak = cam.max()
        return (cam / peak).astype(np.float32) if peak > 0 else np.zeros_like(cam, dtype=np.float32)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, opacity: float = 0.4) -> np.ndarray:
    """The heatmap in OpenCV's JET colours blended over the image; uint8 RGB of the image's size."""
    height, width = image.shape[:2]
    gray = image[..., 0] if image.ndim == 3 else image
    base = np.repeat((np.clip(gray, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    resized = cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_CUBIC)
    colours = cv2.applyColorMap((np.clip(resized, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(colours, opacity, base, 1.0 - opacity, 0.0)


def explained_overlay(predictor, gray: np.ndarray, class_name: str, side: int = 448) -> np.ndarray:
    """Grad-CAM of `predictor` for `class_name` on a decoded X-ray, drawn over it at `side` x `side`."""
    from .imaging import to_model_input

    heatmap = predictor.explain(to_model_input(gray, predictor.height, predictor.width), class_name)
    return overlay_heatmap(to_model_input(gray, side, side), heatmap)
