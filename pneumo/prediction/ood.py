"""Does an image look like the chest X-rays a model was trained on? (out-of-distribution check)

A public demo receives photos, screenshots, documents and CT slices, and a classifier gives each of them
a confident probability. This check needs no extra training data:

- **Features**: a layer of the model averaged over its grid (`grid_average`): the architecture's
  `ood_layer`, by default its last convolutional map (the Grad-CAM layer); for the row LSTM, its last
  LSTM's output. It describes what the network saw before the head squeezed it into two classes.
- **Distance**: the squared Mahalanobis distance of those features from the training split's, with a
  Ledoit-Wolf (shrunk) covariance, so a few thousand images give a stable estimate. Wider feature
  vectors are first projected on their 256 main principal components.
- **Threshold**: the 99th percentile of the validation split's distances, so about 1% of real X-rays
  like the training data are flagged.
- **Score**: distance / threshold; above 1 the image is flagged.

Why these layers (thresholds from validation; six kinds of non-X-ray: a portrait photo, a logo, a product
photo, a solid red square, a rendered text page, an MRI slice):
- CNN+LSTM: the input of the logits layer (64 features after a ReLU) left four of the six below the
  threshold (scores 0.05 to 0.23); the pooled last feature map flagged all six (1.5 to 77).
- ResNet50 (pneumo 0.1's): the pooled conv5 map put all six in the middle of the X-rays (scores 0.01 to
  0.1, with or without a log transform), conv4's flagged two; conv3's flagged all six (3.8 to 45).
- MobileNetV2: out_relu left four of the six below the threshold (0.19 to 0.83); block_9_add, the last
  residual output at 14x14, flagged all six (2.9 to 88) and 0.5% of the hold-out X-rays.
- Row LSTM: its last LSTM's output flagged all six (1.2 to 7.2) and 0.2% of the hold-out; the first LSTM's
  steps flagged them by more (3.2 to 69) but 1.3% of the hold-out, the dense layers left one or two below.
`docs/experiments/ood_layer.py` compares a model's candidate layers this way, without the test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hub import model_folder
from ..cli import add_dataset_argument, command
from ..files import atomic_write
from ..imaging.decoding import Preprocessing, load_model_input
from ..explain.maps import grid_average
from ..networks import get_architecture

MAX_DIMENSIONS = 256
TRAINING_SAMPLE = 2000  # training images whose features estimate the distribution
FLAGGED_FRACTION = 0.01
METHOD = ("squared Mahalanobis distance of a feature map's grid averages from the training split's "
          "(Ledoit-Wolf covariance), divided by the validation split's 99th percentile")


def is_flagged(score: float | None) -> bool | None:
    """Whether an image's score (`FeatureReference.scores`) says it is not like the training X-rays; None without
    a score (a model folder without a reference, or a batch row scored without one)."""
    if score is None or np.isnan(score):
        return None
    return bool(score > 1.0)


@dataclass(frozen=True)
class FeatureReference:
    """The training features' distribution, and the distance above which an image is flagged."""
    mean: np.ndarray           # (d,)
    projection: np.ndarray     # (features, d): principal axes (identity when features <= MAX_DIMENSIONS)
    precision: np.ndarray      # (d, d): inverse of the shrunk covariance
    threshold: float

    @classmethod
    def fit(cls, training_features: np.ndarray, validation_features: np.ndarray,
            flagged_fraction: float = FLAGGED_FRACTION) -> "FeatureReference":
        from sklearn.covariance import LedoitWolf
        from sklearn.decomposition import PCA

        training_features = np.asarray(training_features, np.float64)
        width = training_features.shape[1]
        if width > MAX_DIMENSIONS:
            projection = PCA(MAX_DIMENSIONS, random_state=0).fit(training_features).components_.T
        else:
            projection = np.eye(width)
        projected = training_features @ projection
        covariance = LedoitWolf().fit(projected)
        reference = cls(covariance.location_, projection, covariance.precision_, threshold=1.0)
        distances = reference.distances(validation_features)
        return cls(reference.mean, projection, reference.precision, float(np.quantile(distances, 1 - flagged_fraction)))

    def distances(self, features: np.ndarray) -> np.ndarray:
        centred = np.asarray(features, np.float64) @ self.projection - self.mean
        return np.einsum("ij,jk,ik->i", centred, self.precision, centred)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Distance relative to the threshold: above 1 means "not like the training X-rays"."""
        return self.distances(features) / self.threshold

    def save(self, path) -> None:
        def write(temporary):
            with open(temporary, "wb") as handle:
                np.savez(handle, mean=self.mean.astype(np.float32), projection=self.projection.astype(np.float32),
                         precision=self.precision.astype(np.float32), threshold=np.float64(self.threshold))

        atomic_write(path, write)

    @classmethod
    def load(cls, path) -> "FeatureReference":
        with np.load(path, allow_pickle=False) as saved:
            return cls(saved["mean"].astype(np.float64), saved["projection"].astype(np.float64),
                       saved["precision"].astype(np.float64), float(saved["threshold"]))


def ood_layer_of(config: dict) -> str:
    """The layer the check measures for a model: its architecture's choice, else its Grad-CAM layer."""
    architecture = get_architecture(config["architecture"])
    return architecture.ood_layer or architecture.gradcam_layer


def features_of(model, layers: list[str], sources, height: int, width: int, preprocessing,
                batch_size: int = 32) -> list[np.ndarray]:
    """Each of `layers`' output averaged over its grid (one array per layer, a row per source), for image files
    or bytes through the model's own preprocessing, in one pass per batch."""
    import keras

    layer_model = keras.Model(model.input, [model.get_layer(layer).output for layer in layers])
    collected = [[] for _ in layers]
    for start in range(0, len(sources), batch_size):
        batch = np.stack([load_model_input(source, height, width, preprocessing)
                          for source in sources[start:start + batch_size]])
        outputs = layer_model(batch, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]  # Keras unwraps a single output
        for features, output in zip(collected, outputs):
            features.append(keras.ops.convert_to_numpy(grid_average(output)))
    return [np.concatenate(features) for features in collected]


def fit_reference(folder, data_root, training_sample: int = TRAINING_SAMPLE, seed: int = 0) -> dict:
    """Fit the check for a model folder on its own recorded split (data_split.csv) and record it in the
    folder: ood_reference.npz and an `out_of_distribution` block in its metadata. Returns that block."""
    import pandas as pd

    folder, data_root = Path(folder), Path(data_root)
    config = model_folder.read_config(folder)
    split = pd.read_csv(folder / model_folder.SPLIT_FILE)
    training = split[split.split == model_folder.TRAIN_SPLIT]
    training = training.sample(min(training_sample, len(training)), random_state=seed)
    validation = split[split.split == model_folder.VALIDATION_SPLIT]
    model, layer = model_folder.load_network(folder, config), ood_layer_of(config)
    model_input = (config["input"]["height"], config["input"]["width"],
                   Preprocessing.from_config(config.get("preprocessing")))
    reference = FeatureReference.fit(*(features_of(model, [layer], [str(data_root / p) for p in part.path],
                                                   *model_input)[0]
                                       for part in (training, validation)))
    reference.save(folder / model_folder.OOD_REFERENCE_FILE)
    block = {"method": METHOD, "layer": layer, "file": model_folder.OOD_REFERENCE_FILE,
             "training_images": len(training), "validation_images": len(validation),
             "flagged_fraction_target": FLAGGED_FRACTION}
    model_folder.write_config(folder, {**config, "out_of_distribution": block})
    return block


@command("pneumo ood", also=(FileNotFoundError,))
def main(argv=None) -> int:
    """pneumo ood FOLDER --data ROOT: fit (or refit) the check of a model folder."""
    import argparse
    import json

    from ..hub.model_card import write_model_card

    parser = argparse.ArgumentParser(prog="pneumo ood", description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a model folder with its data_split.csv")
    add_dataset_argument(parser, "the dataset root its data_split.csv paths are relative to")
    args = parser.parse_args(argv)
    block = fit_reference(args.folder, args.data)
    write_model_card(args.folder)  # the card names the layer the check measures
    print(json.dumps(block, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
