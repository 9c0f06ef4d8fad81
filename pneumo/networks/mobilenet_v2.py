"""MobileNetV2 backbone (keras.applications) with global average pooling, Dense(128, ReLU) and a 2-way
softmax, built as one flat graph so Grad-CAM reaches its last convolutional map (`out_relu`).

The input is always scaled to [-1, 1], the range MobileNetV2's ImageNet weights expect, so a model trained
from scratch and one started from those weights have the same graph.
"""

import keras
from keras import layers

from .architecture import (Architecture, backbone_weights_note, classifier_head, pretrained_backbone_options,
                           register)

GRADCAM_LAYER = "out_relu"


def build(input_shape=(224, 224, 3), num_classes=2, backbone_weights=None, dense_units=128, dropout=0.3,
          batch_norm_momentum=0.99):
    """`backbone_weights`: None (from scratch), "imagenet" (Keras' download and cache) or a file path.

    keras.applications builds MobileNetV2's batch normalisation with momentum 0.999: its moving statistics
    average over ~1000 steps, eight epochs of this dataset, so a model trained from scratch would be
    validated (and chosen) on statistics that are mostly its random start. 0.99 (Keras' default, ~100
    steps) follows the training within an epoch.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(inputs)
    backbone = keras.applications.MobileNetV2(include_top=False, weights=backbone_weights, input_tensor=x)
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = batch_norm_momentum
    x = layers.GlobalAveragePooling2D(name="avg_pool")(backbone.output)
    x = layers.Dropout(dropout, name="head_dropout1")(x)
    x = layers.Dense(dense_units, activation="relu", kernel_initializer="he_normal", name="head_dense")(x)
    x = layers.Dropout(dropout, name="head_dropout2")(x)
    outputs = classifier_head(x, num_classes)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


def options_for_rebuild(options: dict) -> dict:
    """The graph does not depend on where the weights started: rebuild without fetching any."""
    return {}


ARCHITECTURE = register(Architecture(
    name="mobilenet_v2",
    build=build,
    default_input_size=224,
    gradcam_layer=GRADCAM_LAYER,
    description="keras.applications.MobileNetV2 without its top (inputs scaled to [-1, 1]), then global "
                "average pooling, dropout, Dense(128, ReLU), dropout and a 2-way softmax",
    options_for_training=pretrained_backbone_options,
    options_for_rebuild=options_for_rebuild,
    weights_note=backbone_weights_note("MobileNetV2"),
    # The 14x14 stage's last residual output: the pooled out_relu features left four of the six non-X-rays
    # below the threshold (0.19-0.83); block_9_add flagged all six (2.9 to 88) and 0.5% of the hold-out
    # X-rays (docs/experiments/ood_layer.py; pneumo/prediction/ood.py).
    ood_layer="block_9_add",
))
