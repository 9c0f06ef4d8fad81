"""Batch-norm statistics re-estimated on a site's own X-rays, without labels (AdaBN, Li et al. 2016).

A network normalises each batch-norm layer's input by a mean and variance measured on the data it was trained
on. Another hospital's X-rays (another machine, exposure, processing) shift those statistics, and every layer
after the first shifted one reads inputs it never saw. Re-estimating the statistics on the site's images puts
the features back where the classifier expects them; the learned weights do not change.

The statistics are population ones: each layer's mean and variance over every image given, measured with the
layers before it already adapted (one pass in training mode, each batch weighted by its size).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import AdaptationError

# What an adapted network takes from its folder's `adaptation` block in place of the released values.
ADAPTED_KEYS = ("calibration", "threshold", "threshold_method", "operating_point", "operating_points")
METHOD = "AdaBN (Li et al. 2016): batch-norm statistics re-estimated on the site's images, without labels"
# The most validation ROC-AUC the re-estimation on a model's own validation X-rays may cost before pneumo.site.adapt
# refuses the model. The EfficientNet-Lite0, whose batch norm stayed frozen at ImageNet's statistics in
# training, loses 0.024; the bundled networks trained with their batch norm gain 0.0002 to 0.004.
MAX_VALIDATION_AUC_LOSS = 0.01


def batch_norm_layers(model) -> list:
    """Every batch-normalisation layer of `model`, nested models included, in the order the model runs them."""
    import keras

    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def batch_norm_statistics(model) -> list[tuple[np.ndarray, np.ndarray]]:
    """A copy of each batch-norm layer's (moving mean, moving variance), to restore with `set_statistics`."""
    return [(np.array(layer.moving_mean), np.array(layer.moving_variance)) for layer in batch_norm_layers(model)]


def set_statistics(model, statistics: list[tuple[np.ndarray, np.ndarray]]) -> None:
    layers = batch_norm_layers(model)
    if len(layers) != len(statistics):
        raise AdaptationError(f"{len(statistics)} sets of statistics for {len(layers)} batch-norm layers")
    for layer, (mean, variance) in zip(layers, statistics):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(variance)


def reestimate_batch_norm(model, batches: Iterable[np.ndarray]) -> int:
    """Replace every batch-norm layer's moving statistics by those of the images in `batches` (model inputs,
    one array per batch). Returns the number of images seen. Nothing else in the model changes."""
    layers = batch_norm_layers(model)
    if not layers:
        raise AdaptationError(f"{model.name} has no batch normalisation: there are no statistics to adapt")
    saved = [(layer.trainable, layer.momentum) for layer in layers]
    seen = 0
    try:
        for layer in layers:
            layer.trainable = True  # a frozen Keras batch-norm layer runs in inference mode and updates nothing
        for batch in batches:
            batch = np.asarray(batch, dtype=np.float32)
            if not len(batch):
                continue
            # moving = momentum * moving + (1 - momentum) * batch statistic: with this momentum the moving value
            # is the size-weighted mean of every batch's statistic so far, whatever it held before.
            for layer in layers:
                layer.momentum = seen / (seen + len(batch))
            model(batch, training=True)
            seen += len(batch)
    finally:
        for layer, (trainable, momentum) in zip(layers, saved):
            layer.trainable, layer.momentum = trainable, momentum
    return seen


def in_batches(images: np.ndarray, batch_size: int = 32):
    """`images` (model inputs) as consecutive batches for `reestimate_batch_norm`."""
    return (images[start:start + batch_size] for start in range(0, len(images), batch_size))


def adapt_predictor(predictor, batches: Iterable[np.ndarray], least_images: int = 0) -> int:
    """Adapt `predictor`'s network to the images in `batches` (its model inputs) and switch it to the calibration
    and operating point its folder fitted for an adapted network (`adaptation` in pneumo.json), without the
    out-of-distribution check. With fewer than `least_images` images nothing changes and AdaptationError says
    so. Returns the number of images."""
    from ..prediction.calibration import Calibration

    block = predictor.config.get("adaptation")
    if not block:
        raise AdaptationError(
            f"{predictor.name}: its folder has no calibration for an adapted network ('adaptation' in "
            f"pneumo.json); add it with pneumo adapt {predictor.folder} --fit-source TRAINING_DATA")
    released = batch_norm_statistics(predictor.model)
    count = reestimate_batch_norm(predictor.model, batches)
    if count < least_images:
        set_statistics(predictor.model, released)
        raise AdaptationError(f"{count} usable X-rays: adapting to a site needs at least {least_images}")
    predictor.calibration = Calibration.from_config(block["calibration"])
    predictor.threshold = float(block["threshold"])
    # The out-of-distribution reference holds the source network's features: measured through the adapted
    # one, 95-100% of the hold-out X-rays land outside it (docs/experiments/adaptation.py), so it goes.
    predictor.feature_reference = None
    config = {key: value for key, value in predictor.config.items() if key != "out_of_distribution"}
    predictor.config = {**config, **{key: block[key] for key in ADAPTED_KEYS}}
    return count


def why_not_adapted(block: dict) -> str | None:
    """Why a model whose folder fitted `block` (its `adaptation` in pneumo.json) is not to be adapted, or None."""
    before, after = block.get("released_validation_roc_auc"), block.get("validation", {}).get("roc_auc")
    if before is None or after is None or before - after <= MAX_VALIDATION_AUC_LOSS:
        return None
    return (f"re-estimating its statistics on its own validation X-rays lowers its validation ROC-AUC from "
            f"{before:.3f} to {after:.3f}: its weights were trained with fixed statistics, so adapting it costs "
            "more than a site could gain")
