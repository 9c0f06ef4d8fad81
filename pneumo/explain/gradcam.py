"""Grad-CAM (Selvaraju et al. 2017): where in the image the evidence for a class lies.

The class score is taken before the softmax (the "logits" layer), and the feature map is the model's last
convolutional map (its folder's explanation `layer`). For a model of two classes the score explained is the
class's log-odds, its logit less the other's: what the probability depends on. A model without a convolutional
map is explained by integrated gradients instead (pneumo.explain.integrated_gradients, chosen by the folder's
explanation block); pneumo.explain.overlays draws either over the X-ray.
"""

from __future__ import annotations

import numpy as np

from .maps import grid_average, scaled_to_peak
from ..networks.tracing import TracedOnce


class GradCam:
    def __init__(self, model, map_layer: str, logits_layer: str = "logits", ood_layer: str | None = None):
        """`map_layer`: the convolutional map Grad-CAM weighs; `ood_layer` (default: `map_layer`): the layer whose
        grid average is returned with the scores, for the out-of-distribution check."""
        import keras
        import tensorflow as tf

        self._model = keras.Model(model.input, [model.get_layer(map_layer).output,
                                                model.get_layer(logits_layer).output,
                                                model.get_layer(ood_layer or map_layer).output])
        classes = int(self._model.outputs[1].shape[-1])

        def logits_and_gradients(images):
            # Gradients of every class score at once: they flow back only through the layers after the
            # feature map (the head), so all classes cost little more than one.
            with tf.GradientTape(persistent=True) as tape:
                feature_map, logits, pooled_map = self._model(images, training=False)
                scores = [logits[:, index] for index in range(classes)]
            gradients = tf.stack([tape.gradient(score, feature_map) for score in scores])
            return feature_map, logits, gradients, grid_average(pooled_map)

        self._compute = TracedOnce(logits_and_gradients, tf.TensorSpec([1, *model.input.shape[1:]], tf.float32))

    def logits_and_heatmaps(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The class scores of one model input, a (classes, rows, cols) heatmap per class in [0, 1], and the
        pooled layer's map averaged over its grid (what the out-of-distribution check measures)."""
        feature_map, logits, gradients, pooled = self._compute(np.asarray(image[None], np.float32))
        feature_map, gradients = np.asarray(feature_map[0], np.float64), np.asarray(gradients[:, 0], np.float64)
        # The mean intensity of the gradient over each feature-map channel: how much that channel matters.
        channel_weights = gradients.mean(axis=(1, 2))
        if len(channel_weights) == 2:
            # A two-class model's probabilities depend only on the difference of its two scores: each class is
            # explained by its score less the other's (its log-odds), leaving out what raises both alike. Its own
            # score alone weighed every region against NORMAL on 2 in 5 normal X-rays for the ResNet50 (an empty
            # map; docs/experiments/empty_heatmaps.py).
            channel_weights = channel_weights - channel_weights[::-1]
        cams = np.maximum(np.einsum("hwc,kc->khw", feature_map, channel_weights), 0.0)
        return np.asarray(logits[0], np.float64), scaled_to_peak(cams), np.asarray(pooled[0], np.float64)
