"""Pure LSTM over pixel rows, as one of the seed projects built it: the image is read top to bottom as a
sequence of rows (each row's three channels side by side), by three stacked LSTMs, then a dense stack.

It has no convolutional map for Grad-CAM: its heatmaps are integrated gradients over the input pixels
(pneumo.integrated_gradients), and its out-of-distribution features are the last LSTM's output.
"""

import keras
from keras import layers

from .architecture import LOGITS_LAYER, Architecture, register

# The sequence the LSTMs read: one step per pixel row.
ROW_SEQUENCE_LAYER = "pixel_rows"


def build(input_shape=(150, 150, 3), num_classes=2, lstm_units=(250, 120, 64), dense_units=(250, 120, 64, 28),
          dropout=0.05, recurrent_dropout=0.20):
    rows, cols, channels = input_shape
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Reshape((rows, cols * channels), name=ROW_SEQUENCE_LAYER)(inputs)
    for index, units in enumerate(lstm_units, start=1):
        x = layers.LSTM(units, return_sequences=index < len(lstm_units), dropout=dropout,
                        recurrent_dropout=recurrent_dropout, name=f"row_lstm{index}")(x)
    for index, units in enumerate(dense_units, start=1):
        x = layers.Dense(units, activation="relu", kernel_initializer="he_normal", name=f"dense{index}")(x)
    logits = layers.Dense(num_classes, name=LOGITS_LAYER)(x)
    outputs = layers.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="row_lstm")


ARCHITECTURE = register(Architecture(
    name="row_lstm",
    build=build,
    default_input_size=150,
    description="the image read as 150 rows of 450 values (three channels side by side) by three stacked "
                "LSTMs (250, 120, 64 units; dropout 0.05, recurrent dropout 0.20), then Dense 250, 120, 64, 28 "
                "(ReLU) and a 2-way softmax",
    explanation="integrated_gradients",
    ood_layer="row_lstm3",
))
