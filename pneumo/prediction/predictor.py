"""A trained model folder turned into calibrated predictions and their explanations.

The folder's `pneumo.json` says everything needed: input size, preprocessing, class names, the decision
threshold and the calibration temperature. Nothing about a model is hard-coded here.
"""

from __future__ import annotations

import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..explain import methods
from ..hub import model_folder
from .calibration import Calibration, ProbabilityMap, SiteCalibration
from ..errors import ModelLoadError, ModelNotFoundError
from ..explain.gradcam import GradCam
from ..imaging.decoding import DecodedFile, ImageSource, Preprocessing, load_model_input
from ..explain.integrated_gradients import IntegratedGradients
from ..explain.maps import grid_average
from ..networks import LOGITS_LAYER
from .ood import FeatureReference, is_flagged
from ..networks.tracing import TracedOnce


# The verdict on an image unlike the X-rays a model was trained on (pneumo.prediction.ood): no class is given, for a
# class probability means nothing there (a photo of a gift box scored PNEUMONIA 0.998).
NOT_A_CHEST_XRAY = "not a chest X-ray?"


def verdict_of(label: str, out_of_distribution: bool | None) -> str:
    """What a person is told of a decided `label`: the label, or NOT_A_CHEST_XRAY for an image out of distribution
    (the label and the probabilities stay in the record, for those who want them)."""
    return NOT_A_CHEST_XRAY if out_of_distribution else label


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict  # class name -> calibrated probability
    threshold: float
    model_name: str
    revision: str | None
    positive_class: str
    ood_score: float | None = None  # distance from the training X-rays' features / its threshold (pneumo.prediction.ood)

    @property
    def positive_probability(self) -> float:
        return self.probabilities[self.positive_class]

    @property
    def out_of_distribution(self) -> bool | None:
        """True when the image does not look like the X-rays the model was trained on; None when the model
        folder has no reference to tell."""
        return is_flagged(self.ood_score)

    @property
    def verdict(self) -> str:
        return verdict_of(self.label, self.out_of_distribution)

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "label": self.label, "probabilities": self.probabilities,
                "threshold": self.threshold,
                "positive_class": self.positive_class, "model": self.model_name, "revision": self.revision,
                "out_of_distribution": self.out_of_distribution,
                "ood_score": None if self.ood_score is None else round(self.ood_score, 3)}


class CalibratedPredictor:
    """What every predictor (one network, or an ensemble of them) does alike: calibrated class probabilities
    from `assess`, the label at the folder's threshold, and predictions with their heatmaps.

    A subclass gives `input_shape`, `load_image`, `assess`, `explained_assessment` and `explanation_method`.
    """

    def __init__(self, config: dict, folder, reference: str, revision: str | None = None):
        self.folder = Path(folder)
        self.name = config.get("name", self.folder.name)
        # What a page or a figure calls the model: the demo's name for a bundled one (pneumo.hub.bundled sets it).
        self.display_name = self.name
        self.config = config
        self.reference = reference
        self.revision = revision
        self.class_names = list(config["class_names"])
        self.positive_class = config["positive_class"]
        self.positive_index = self.class_names.index(self.positive_class)
        self.threshold = float(config["threshold"])
        self.calibration = Calibration.from_config(config.get("calibration"))
        site_point = (config.get("site_adaptation") or {}).get("operating_point") or {}
        if site_point.get("verdict") == "trusted":  # fitted at its site without labels (pneumo adapt)
            self.calibration = SiteCalibration(self.calibration, ProbabilityMap.from_config(site_point["probability_map"]),
                                               self.positive_index)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities, shape (n, n_classes), for a batch of model inputs."""
        return self.assess(images)[0]

    def positive_probabilities(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Calibrated P(positive class) of any number of model inputs, `batch_size` at a time (bounded memory)."""
        return np.concatenate([self.probabilities(images[start:start + batch_size])[:, self.positive_index]
                               for start in range(0, len(images), batch_size)])

    def decide(self, probabilities: np.ndarray, threshold: float | None = None) -> str:
        """The label for one image's class probabilities at `threshold` (default: the folder's)."""
        threshold = self.threshold if threshold is None else threshold
        if probabilities[self.positive_index] >= threshold:
            return self.positive_class
        others = [i for i in range(len(self.class_names)) if i != self.positive_index]
        return self.class_names[max(others, key=lambda i: probabilities[i])]

    def _prediction(self, probabilities: np.ndarray, ood_score: float) -> Prediction:
        return Prediction(label=self.decide(probabilities),
                          probabilities={name: float(p) for name, p in zip(self.class_names, probabilities)},
                          threshold=self.threshold, model_name=self.name, revision=self.revision,
                          positive_class=self.positive_class,
                          ood_score=None if np.isnan(ood_score) else float(ood_score))

    def predict_image(self, image: np.ndarray) -> Prediction:
        probabilities, ood_scores = self.assess(image[None])
        return self._prediction(probabilities[0], ood_scores[0])

    def predict_file(self, source: ImageSource) -> Prediction:
        return self.predict_image(self.load_image(source))

    def predict_and_explain(self, image: np.ndarray, class_name: str | None = None) -> tuple[Prediction, np.ndarray]:
        """The prediction and the heatmap of `class_name` (default: the predicted class)."""
        probabilities, ood_score, heatmaps = self.explained_assessment(image)
        prediction = self._prediction(probabilities, ood_score)
        return prediction, heatmaps[self.class_names.index(class_name or prediction.label)]

    def load_network(self) -> None:
        """Load what was left for its first use (Predictor.from_folder's `defer_network`); nothing once loaded."""

    @property
    def network_ready(self) -> bool:
        """Whether a request would find the network loaded (or its load failed, which it then says): the demo
        tells a person who arrives earlier that the models are still loading."""
        return True

    def trace(self) -> None:
        """Trace the explained pass now (seconds, once), rather than in the first request that needs it."""
        self.explained_assessment(np.zeros(self.input_shape, np.float32))

    def explain(self, image: np.ndarray, class_name: str | None = None) -> np.ndarray:
        """The heatmap of `class_name` (default: the positive class), values in [0, 1], on the method's grid:
        the feature map's for Grad-CAM, the model input's for integrated gradients."""
        return self.predict_and_explain(image, class_name or self.positive_class)[1]


class Predictor(CalibratedPredictor):
    """Calibrated predictions of one model folder's network.

    `probabilities = softmax(logits / temperature + bias)` (`calibration.Calibration`); the label is the positive
    class when its probability reaches the folder's threshold, else the most probable of the other classes (both
    fitted on the validation split).
    """

    def __init__(self, model, config: dict, folder, reference: str, revision: str | None = None,
                 load_network=None):
        """`model`: the Keras network; or None, and `load_network()` returns it when it is first needed (the demo
        serves its page, built from what each folder's pneumo.json says, while the networks load behind it)."""
        super().__init__(config, folder, reference, revision)
        self.height = int(config["input"]["height"])
        self.width = int(config["input"]["width"])
        self.preprocessing = Preprocessing.from_config(config.get("preprocessing"))
        self.logits_layer = config.get("logits_layer", LOGITS_LAYER)
        self.feature_reference = self._feature_reference(config)
        self.explanation = methods.settings(config)
        # The layer the out-of-distribution check measures. A folder without the check measures nothing: any
        # layer would do, the Grad-CAM map or else the logits.
        self.ood_layer = ((config.get("out_of_distribution") or {}).get("layer") or self.explanation.get("layer")
                          or self.logits_layer)
        self._explainer = None
        # Concurrent first requests would each trace an explainer (about 5 s for integrated gradients).
        self._explainer_lock = threading.Lock()
        self._network = LazyNetwork(model, load_network, self._traced_forward, self.folder)

    def _traced_forward(self, model):
        """The network's forward pass as one traced graph for every batch size: calling a Keras model eagerly
        costs more than the arithmetic itself for a single image (about 0.5 s against 0.05 s for the ResNet50
        on 2 cores). The same pass yields the pooled features the out-of-distribution check measures."""
        import keras
        import tensorflow as tf

        scores = keras.Model(model.input, [model.get_layer(self.logits_layer).output,
                                           model.get_layer(self.ood_layer).output])

        def logits_and_features(images):
            logits, feature_map = scores(images, training=False)
            return logits, grid_average(feature_map)

        return TracedOnce(logits_and_features, tf.TensorSpec([None, self.height, self.width, 3], tf.float32))

    @property
    def model(self):
        """The Keras network, loaded first if it was deferred; a load that failed raises its ModelLoadError again."""
        return self._loaded()[0]

    def load_network(self) -> None:
        self._loaded()

    @property
    def network_ready(self) -> bool:
        return self._network.ready

    def _loaded(self):
        """(the network, its traced forward pass), loaded once."""
        return self._network.get()

    def _feature_reference(self, config: dict):
        block = config.get("out_of_distribution")
        if not block:
            return None
        path = self.folder / block["file"]
        if not path.exists():
            raise ModelLoadError(f"{self.folder}: {block['file']} (the out-of-distribution reference) is missing")
        return FeatureReference.load(path)

    @classmethod
    def from_folder(cls, folder, reference=None, revision=None, defer_network: bool = False) -> "Predictor":
        """The folder's predictor. With `defer_network`, only what its pneumo.json says is read now: the network
        loads when first needed, or when `model` is first read (a folder missing its network's files is refused at
        once all the same, by load_network)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelNotFoundError(f"{folder}: no such model folder")
        config = model_folder.read_config(folder)
        if defer_network and all(path.exists() for path in model_folder.network_files(folder, config)):
            network, load_network = None, lambda: model_folder.load_network(folder, config)
        else:
            network, load_network = model_folder.load_network(folder, config), None
        try:
            return cls(network, config, folder, reference or str(folder), revision, load_network)
        except USABLE_MODEL_ERRORS as error:
            raise unusable_model(folder, error) from error

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one model input (what `load_image` returns)."""
        return (self.height, self.width, 3)

    def load_image(self, source: "ImageSource | DecodedFile") -> np.ndarray:
        """`source` as this model's input, through the one image path (a `DecodedFile` shares its decodes)."""
        return load_model_input(source, self.height, self.width, self.preprocessing)

    def _logits_and_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = self._loaded()[1](np.asarray(images, dtype=np.float32))
        return logits.numpy(), features.numpy()

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Class scores before calibration and softmax, shape (n, n_classes)."""
        return self._logits_and_features(images)[0]

    def ood_scores(self, features: np.ndarray) -> np.ndarray:
        """Out-of-distribution scores (above 1: unlike the training X-rays); NaN without a reference."""
        if self.feature_reference is None:
            return np.full(len(features), np.nan)
        return self.feature_reference.scores(features)

    def assess(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated class probabilities (n, n_classes) and out-of-distribution scores (n,), one pass."""
        logits, features = self._logits_and_features(images)
        return self.calibration.probabilities(logits), self.ood_scores(features)

    @property
    def explanation_method(self) -> str:
        """The name of the method that draws this model's heatmaps, as the page and the report print it:
        "Grad-CAM" or "integrated gradients" (the folder's `explanation`)."""
        return methods.display_name(self.explanation)

    def _explainer_for(self):
        with self._explainer_lock:
            if self._explainer is None:
                self._explainer = explainer(self.model, self.explanation, self.logits_layer, self.ood_layer)
        return self._explainer

    def explained_assessment(self, image: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """One image's calibrated class probabilities, out-of-distribution score and one heatmap per class, from
        one pass through the model: the pass that yields the gradients also yields the logits."""
        logits, heatmaps, features = self._explainer_for().logits_and_heatmaps(image)
        return self.calibration.probabilities(logits[None])[0], self.ood_scores(features[None])[0], heatmaps




class LazyNetwork:
    """A network and its traced forward pass, at once when given, else built on first use by `load()` (the demo
    serves its page from what each folder's pneumo.json says while the networks load behind it). Users that
    arrive while it loads wait for that one load; a load that failed raises its error again at each use."""

    def __init__(self, network, load, traced_forward, folder):
        self._lock, self._load, self._traced_forward, self._folder = threading.Lock(), load, traced_forward, folder
        self._error = None
        self._network, self._forward = (None, None) if network is None else (network, traced_forward(network))

    @property
    def ready(self) -> bool:
        """Loaded, or failed to load: a `get` would not wait for a load."""
        return self._network is not None or self._error is not None

    def get(self) -> tuple:
        """(the network, its traced forward pass)."""
        with self._lock:
            if self._network is None:
                if self._error is None:
                    try:
                        network = self._load()
                        self._network, self._forward = network, self._traced_forward(network)
                    except ModelLoadError as error:
                        self._error = error
                    except USABLE_MODEL_ERRORS as error:
                        self._error = unusable_model(self._folder, error)
                if self._error is not None:  # a new exception each time: a raise extends its traceback
                    raise type(self._error)(*self._error.args)
            return self._network, self._forward


# What a malformed pneumo.json, a layer the network lacks or a damaged reference file raises.
USABLE_MODEL_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError, OSError, EOFError,
                       zipfile.BadZipFile)


def unusable_model(folder, error: Exception) -> ModelLoadError:
    return ModelLoadError(f"{folder}: {model_folder.CONFIG_FILE} does not describe a usable model "
                          f"({type(error).__name__}: {error})")


def explainer(model, block: dict, logits_layer: str, ood_layer: str):
    """The object whose `logits_and_heatmaps(image)` explains `model` by `block`'s method (pneumo.explain.methods)."""
    if block["method"] == methods.GRADCAM:
        return GradCam(model, block["layer"], logits_layer, ood_layer)
    return IntegratedGradients(model, logits_layer, ood_layer, steps=int(block.get("steps", methods.STEPS)),
                               baseline=block.get("baseline", methods.BASELINE))
