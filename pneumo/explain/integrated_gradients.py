"""Integrated gradients (Sundararajan et al. 2017): which input pixels carry the evidence for a class.

For a model with no convolutional map for Grad-CAM (the row LSTM reads raw pixel rows), the attribution of
input value i to class k is

    (x_i - x'_i) * the integral over a from 0 to 1 of d logit_k(x' + a (x - x')) / d x_i

along the straight path from a baseline x' to the image x, here by Gauss-Legendre quadrature on `steps`
points (Captum's default rule: exact for polynomials of degree below 2 x steps, and it never evaluates the
gradient at the baseline itself, where an untrained network's ReLUs sit exactly on their kink). The
attributions of an image sum to logit_k(x) - logit_k(x') (completeness), up to the rule's error.

- **Baseline**: a black image (zeros of the model input): an X-ray with nothing in it, the usual choice
  for images. An attribution is then a pixel's brightness times its average gradient, so bright evidence
  (opacities, bone, markers) weighs more than dark lung fields.
- **Heatmap**: the attributions summed over the input's (identical) channels, their positive part (the
  evidence for the class), blurred because single pixels' attributions are speckled, and divided by the
  peak like a Grad-CAM heatmap: one per class, at the input's size.
- **Cost**: the whole path for every class, and the image itself, go through the network as one batch of
  classes x steps + 1 images with one backward pass: each copy of the path is scored by its own class's
  logit, so the one gradient holds every class's. About 1 s of CPU time for the 150 px row LSTM (two
  backward passes after one forward pass cost half as much again), plus about 5 s to trace it once.
"""

from __future__ import annotations

import cv2
import numpy as np

from .methods import BASELINE, STEPS
from .maps import grid_average, scaled_to_peak
from ..networks.tracing import TracedOnce

BLUR = 0.02  # the heatmap's Gaussian blur: its standard deviation as a fraction of the input's side


class IntegratedGradients:
    def __init__(self, model, logits_layer: str = "logits", ood_layer: str | None = None, steps: int = STEPS,
                 baseline: str = BASELINE):
        """`ood_layer` (default: the logits): the layer whose grid average is returned with the scores, for the
        out-of-distribution check."""
        import keras
        import tensorflow as tf

        if baseline != BASELINE:
            raise ValueError(f"integrated gradients: unknown baseline {baseline!r} (only {BASELINE!r})")
        self._model = keras.Model(model.input, [model.get_layer(logits_layer).output,
                                                model.get_layer(ood_layer or logits_layer).output])
        classes = int(self._model.outputs[0].shape[-1])
        self.rows, self.cols, channels = (int(side) for side in model.input.shape[1:])
        self.steps = steps
        # Where on the path (0: the baseline, 1: the image) the gradients are taken, and their weights.
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alphas, step_weights = tf.constant((nodes + 1) / 2, tf.float32), tf.constant(weights / 2, tf.float32)

        def integrate(image):
            baseline_image = tf.zeros_like(image)
            path = baseline_image + alphas[:, None, None, None] * (image - baseline_image)
            # One copy of the path per class, then the image itself, whose scores and features are returned.
            batch = tf.concat([tf.tile(path, [classes, 1, 1, 1]), image[None]], axis=0)
            own_class = tf.concat([tf.repeat(tf.eye(classes), steps, axis=0), tf.zeros([1, classes])], axis=0)
            with tf.GradientTape() as tape:
                tape.watch(batch)
                logits, pooled = self._model(batch, training=False)
                score = tf.reduce_sum(logits * own_class)
            gradients = tf.reshape(tape.gradient(score, batch)[:-1], [classes, steps, self.rows, self.cols, channels])
            attributions = (image - baseline_image) * tf.einsum("s,ksrcd->krcd", step_weights, gradients)
            return logits[-1], attributions, grid_average(pooled)[-1]

        self._integrate = TracedOnce(integrate, tf.TensorSpec([self.rows, self.cols, channels], tf.float32))

    def attributions(self, image: np.ndarray) -> np.ndarray:
        """Every class's attributions over one model input, (classes, rows, cols, channels): those of class k sum
        to about its score of the image less its score of the baseline."""
        return np.asarray(self._integrate(np.asarray(image, np.float32))[1], np.float64)

    def logits_and_heatmaps(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The class scores of one model input, a (classes, rows, cols) heatmap per class in [0, 1], and the
        pooled layer's output averaged over its grid (what the out-of-distribution check measures)."""
        logits, attributions, pooled = self._integrate(np.asarray(image, np.float32))
        evidence = np.maximum(np.asarray(attributions, np.float64).sum(axis=-1), 0.0)
        sigma = BLUR * max(self.rows, self.cols)
        blurred = np.stack([cv2.GaussianBlur(one_class, (0, 0), sigma) for one_class in evidence])
        return np.asarray(logits, np.float64), scaled_to_peak(blurred), np.asarray(pooled, np.float64)
