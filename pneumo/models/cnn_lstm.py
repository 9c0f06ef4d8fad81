"""CNN+LSTM hybrid: convolutions read local texture, an LSTM reads the lung regions as a sequence.

The last feature map (a grid of regions) is flattened row by row into a sequence of region vectors, so
the LSTM can relate opacities in one region to those in another before the classifier decides.
"""

import keras
from keras import layers

from .architecture import LOGITS_LAYER, Architecture, register

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
    rows, cols, channels = x.shape[1:]
    x = layers.Reshape((rows * cols, channels), name="lung_region_sequence")(x)
    x = layers.LSTM(lstm_units, name="region_lstm")(x)
    x = layers.Dropout(dropout, name="lstm_dropout")(x)
    x = layers.Dense(64, activation="relu", kernel_initializer="he_normal", name="dense")(x)
    x = layers.Dropout(dropout, name="dense_dropout")(x)
    logits = layers.Dense(num_classes, name=LOGITS_LAYER)(x)
    outputs = layers.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="cnn_lstm")


ARCHITECTURE = register(Architecture(
    name="cnn_lstm",
    build=build,
    default_input_size=224,
    gradcam_layer=GRADCAM_LAYER,
    description="5 convolutional blocks (ReLU, He init, batch norm, max pooling); the last feature map read "
                "row by row as a sequence of lung regions by an LSTM(128), then Dense(64) and a softmax",
))
