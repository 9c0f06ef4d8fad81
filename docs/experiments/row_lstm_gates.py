"""Why the row LSTM did not learn: a few hundred training steps of each variant on the real train split,
with the recipe's augmentation, scoring 300 validation images every 60 steps (docs/recipe-evidence.md).

    PYTHONPATH=. python docs/experiments/row_lstm_gates.py baseline,chrono [STEPS]

Needs a data_split.csv of seed 42 at runs/row-lstm/ (any run of pneumo.training.train writes one). Each
variant sets the gate biases itself ("baseline": Keras' own start; "chrono": Tallec and Ollivier 2018).
"""
import sys
import time
import numpy as np, pandas as pd, keras
from sklearn.metrics import roc_auc_score
from pneumo.training.data import class_weights, training_batches
from pneumo.imaging.decoding import Preprocessing, decode_many_for_model
from pneumo.training.selection import prepared_inputs
from pneumo.networks import get_architecture
from pneumo.networks.row_lstm import chrono_initialise

ROOT = "../shared/data/chest_xray/"
split = pd.read_csv("runs/row-lstm/data_split.csv")
train = split[split.split == "train"]
val = split[split.split == "validation"].sample(300, random_state=0)
pre = Preprocessing.from_config({"decode": "grayscale", "intensity": {"method": "equalize"},
                                 "resize": {"shrink": "area", "enlarge": "linear", "keep_aspect_ratio": False},
                                 "channels": 3, "range": [0.0, 1.0]})
xv = prepared_inputs(decode_many_for_model([ROOT + p for p in val.path], 150, 150), pre, 150)
yv = val.label.to_numpy()
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 240

def run(name, chrono_init=False, clipnorm=None, augment=True, lr=1e-3):
    keras.utils.set_random_seed(42)
    model = get_architecture("row_lstm").build((150, 150, 3), 2)
    if chrono_init:
        chrono_initialise(model, 150)  # what the architecture's build does
    else:  # Keras' own start: forget gates at 1, input gates at 0
        for layer in model.layers:
            if isinstance(layer, keras.layers.LSTM):
                bias = np.zeros(4 * layer.units, dtype="float32")
                bias[layer.units:2 * layer.units] = 1.0
                layer.cell.bias.assign(bias)
    model.compile(optimizer=keras.optimizers.AdamW(lr, weight_decay=1e-4, clipnorm=clipnorm),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.05))
    labels = train.label.to_numpy()
    weights = class_weights(labels)
    if augment:
        batches = training_batches([ROOT + p for p in train.path], labels, 150, 32, preprocessing=pre, num_classes=2)
        get = lambda i: batches[i % len(batches)]
    else:
        xs = prepared_inputs(decode_many_for_model([ROOT + p for p in train.path], 150, 150), pre, 150)
        order = np.random.default_rng(0).permutation(len(xs))
        get = lambda i: (xs[order[(i * 32) % len(xs):(i * 32) % len(xs) + 32]],
                         np.eye(2, dtype="float32")[labels[order[(i * 32) % len(xs):(i * 32) % len(xs) + 32]]])
    start, losses = time.time(), []
    for step in range(STEPS):
        x, y = get(step)
        sw = np.array([weights[int(k)] for k in y.argmax(1)], dtype="float32")
        losses.append(float(model.train_on_batch(x, y, sample_weight=sw)))
        if (step + 1) % 60 == 0:
            auc = roc_auc_score(yv, model.predict(xv, batch_size=64, verbose=0)[:, 1])
            print(f"{name:28s} step {step + 1:4d}  loss(last 60) {np.mean(losses[-60:]):.4f}  val AUC {auc:.3f}  "
                  f"{time.time() - start:.0f}s", flush=True)

VARIANTS = {"baseline": {}, "chrono": {"chrono_init": True}, "chrono+clip": {"chrono_init": True, "clipnorm": 1.0},
            "no-augmentation": {"augment": False}, "baseline-lr3e-4": {"lr": 3e-4}}
for name in sys.argv[1].split(","):
    run(name, **VARIANTS[name])
