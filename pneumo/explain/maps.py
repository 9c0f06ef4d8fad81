"""Small operations on a network's maps, shared by the heatmap methods and the out-of-distribution check."""

from __future__ import annotations

import numpy as np


def grid_average(layer_output):
    """A layer's output (batch, ..., channels) averaged over every axis between the batch and the channels:
    a convolutional map's rows and columns, a sequence's steps, nothing of a flat vector. (batch, channels)
    Keras ops, so it runs on the backend that trained the model as in TensorFlow's traced functions."""
    from keras import ops

    grid_axes = tuple(range(1, len(layer_output.shape) - 1))
    return ops.mean(layer_output, axis=grid_axes) if grid_axes else layer_output


def scaled_to_peak(maps: np.ndarray) -> np.ndarray:
    """Non-negative (classes, rows, cols) maps divided by each one's peak: heatmaps in [0, 1], float32 (a map
    with no positive value stays all zeros)."""
    peaks = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0).astype(np.float32)
