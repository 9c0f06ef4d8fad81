"""CNN+LSTM hybrid: convolutions read local texture, an LSTM reads the lung regions as a sequence.

The last feature map (a grid of regions) is flattened row by row into a sequence of region vectors, so
the LSTM can relate opacities in one region to those in another before the classifier decides.
"""

import keras
from keras import layers

from . import efficientnet_lite
from .architecture import Architecture, classifier_head, register

GRADCAM_LAYER = "last_conv_features"


def build(input_shape=(224, 224, 3), num_classes=2, filters=(16, 32, 64, 128, 256), lstm_units=128,
          dropout=0.4):
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for block, width in enumerate(filters, start=1):
        last_block = block == len(filters)
        # Deeper blocks get two convolutions: they are cheap at low resolution and add capacity.
        for conv in range(2 if block >= len(filters) - 1 else 1):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                              name=f"block{block}_conv{conv + 1}")(x)
            x = layers.BatchNormalization(name=f"block{block}_bn{conv + 1}")(x)
            x = layers.ReLU(name=GRADCAM_LAYER if last_block and conv == 1 else f"block{block}_relu{conv + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    return keras.Model(inputs, region_lstm_head(x, num_classes, lstm_units, dropout), name="cnn_lstm")


def region_lstm_head(feature_map, num_classes, lstm_units=128, dropout=0.4):
    """The seeds' flow after the CNN: the map's regions, row by row, as a sequence for an LSTM, then Dense(64)
    and a softmax over the classes."""
    rows, cols, channels = feature_map.shape[1:]
    x = layers.Reshape((rows * cols, channels), name="lung_region_sequence")(feature_map)
    x = layers.LSTM(lstm_units, name="region_lstm")(x)
    x = layers.Dropout(dropout, name="lstm_dropout")(x)
    x = layers.Dense(64, activation="relu", kernel_initializer="he_normal", name="dense")(x)
    x = layers.Dropout(dropout, name="dense_dropout")(x)
    return classifier_head(x, num_classes)


def build_on_pretrained_trunk(input_shape=(224, 224, 3), num_classes=2, backbone_weights=None, variant="lite0",
                              lstm_units=128, dropout=0.4):
    """The same head on EfficientNet-Lite's last feature map (7x7 regions of 1280 channels at 224 px)."""
    image = keras.Input(shape=input_shape, name="image")
    outputs = region_lstm_head(efficientnet_lite.trunk(image, variant), num_classes, lstm_units, dropout)
    model = keras.Model(image, outputs, name=f"cnn_lstm_{variant}")
    if backbone_weights is not None:
        efficientnet_lite.load_checkpoint(model, efficientnet_lite.checkpoint_path(backbone_weights, variant))
    return model


ARCHITECTURE = register(Architecture(
    name="cnn_lstm",
    build=build,
    default_input_size=224,
    gradcam_layer=GRADCAM_LAYER,
    description="5 convolutional blocks (ReLU, He init, batch norm, max pooling); the last feature map read "
                "row by row as a sequence of lung regions by an LSTM(128), then Dense(64) and a softmax",
))

ARCHITECTURE_ON_PRETRAINED_TRUNK = register(Architecture(
    name="cnn_lstm_lite0",
    build=build_on_pretrained_trunk,
    default_input_size=224,
    gradcam_layer=efficientnet_lite.GRADCAM_LAYER,
    description="EfficientNet-Lite0's convolutional trunk; its last feature map read row by row as a sequence "
                "of lung regions by an LSTM(128), then Dense(64) and a softmax",
    options_for_training=efficientnet_lite.options_for_training,
    options_for_rebuild=efficientnet_lite.options_for_rebuild,
    training_stages=efficientnet_lite.training_stages,
    weights_note=efficientnet_lite.weights_note,
    ood_layer=efficientnet_lite.OOD_LAYER,
))
