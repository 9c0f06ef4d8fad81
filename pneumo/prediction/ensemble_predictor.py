"""An ensemble folder scored like a model folder: the calibrated mean of its members' P(pneumonia).

`pneumo ensemble` decides whether an ensemble beats each member on the
validation evidence and writes the folder: no network of its own, a `pneumo.json` of `"kind": "ensemble"`
that names each member's folder and the SHA-256 of the weights it was fitted with, and its own temperature,
class bias and threshold. `pneumo.load_predictor` reads it as an `EnsemblePredictor`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..hub import model_folder
from ..errors import ModelLoadError, ModelNotFoundError
from ..imaging.decoding import DecodedFile
from ..explain.maps import scaled_to_peak
from .predictor import CalibratedPredictor, Predictor

# The mean's probabilities are read as 2-class log-probabilities by the calibration, kept off 0 and 1.
PROBABILITY_FLOOR = 1e-7
EXPLANATION = "mean of the members' heatmaps"


def mean_log_probabilities(mean_positive, positive_index: int) -> np.ndarray:
    """The mean P(positive) as two-class log-probabilities (n, 2): the "logits" its calibration scales."""
    mean_positive = np.clip(np.asarray(mean_positive, dtype=np.float64), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    logits = np.empty((len(mean_positive), 2))
    logits[:, positive_index] = np.log(mean_positive)
    logits[:, 1 - positive_index] = np.log1p(-mean_positive)
    return logits


class EnsemblePredictor(CalibratedPredictor):
    """The calibrated mean of its members' calibrated P(positive), with its own threshold.

    Its model input is every member's own input, flattened and concatenated (`load_image`), so each member sees
    exactly what it sees alone and `pneumo.batch.scoring` streams it like any model's. An X-ray is read once; members
    of the same input size share its decode. The out-of-distribution score is the mean of the members' (each
    is 1 at its own threshold); the heatmap is the mean of the members' heatmaps of the same class, each
    resized to the largest member's input and the mean scaled to [0, 1].
    """

    def __init__(self, members: list[Predictor], config: dict, folder, reference: str | None = None):
        super().__init__(config, folder, reference or str(folder))
        self.members = list(members)
        self.model = None  # no network of its own: see members
        self.explanation = {"method": model_folder.ENSEMBLE_KIND}
        self.feature_reference = None
        self.height = max(member.height for member in self.members)
        self.width = max(member.width for member in self.members)
        self._sizes = [int(np.prod(member.input_shape)) for member in self.members]

    @classmethod
    def from_folder(cls, folder, loaded=()) -> "EnsemblePredictor":
        """The ensemble in `folder`: each member from `loaded` when one of those predictors has the weights the
        ensemble was fitted with, else from the member folder it names (relative to `folder`)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelNotFoundError(f"{folder}: no such model folder")
        config = model_folder.read_ensemble_config(folder)
        by_weights = {model_folder.model_file_sha256(p.folder): p for p in loaded if p.model is not None}
        members = []
        for member in config["members"]:
            predictor = by_weights.get(member["model_sha256"])
            if predictor is None:
                member_folder = folder / member["folder"]
                if not member_folder.is_dir():
                    raise ModelNotFoundError(f"{folder}: its member {member['name']} ({member_folder}) is missing")
                if model_folder.model_file_sha256(member_folder) != member["model_sha256"]:
                    raise ModelLoadError(f"{folder}: the weights in {member_folder} are not the ones the ensemble was "
                                         f"fitted with; refit it (pneumo ensemble ... --write {folder})")
                predictor = Predictor.from_folder(member_folder)
            members.append(predictor)
        check_members(members)
        if members[0].class_names != list(config["class_names"]):
            raise ModelLoadError(f"{folder}: its classes {config['class_names']} are not its members' "
                                 f"{members[0].class_names}")
        return cls(members, config, folder)

    @property
    def network_ready(self) -> bool:
        return all(member.network_ready for member in self.members)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (sum(self._sizes),)

    def load_image(self, source) -> np.ndarray:
        """Each member's own input through the one image path, read once, side by side."""
        decoded = DecodedFile(source)
        return np.concatenate([member.load_image(decoded).ravel() for member in self.members]).astype(np.float32)

    def member_inputs(self, images: np.ndarray) -> list[np.ndarray]:
        """The members' own inputs, (n, height, width, 3) each, from a batch of ensemble inputs (n, size)."""
        images = np.asarray(images, dtype=np.float32)
        parts = np.split(images, np.cumsum(self._sizes)[:-1], axis=-1)
        return [part.reshape(len(images), *member.input_shape) for part, member in zip(parts, self.members)]

    def combine(self, member_positive: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities (n, 2) from the members' P(positive) (n, members)."""
        return self.calibration.probabilities(mean_log_probabilities(np.mean(member_positive, axis=1),
                                                                     self.positive_index))

    def logits(self, images: np.ndarray) -> np.ndarray:
        """The members' mean as two-class log-probabilities (before the ensemble's calibration)."""
        positive = np.stack([member.probabilities(part)[:, member.positive_index]
                             for member, part in zip(self.members, self.member_inputs(images))], axis=1)
        return mean_log_probabilities(positive.mean(axis=1), self.positive_index)

    def assess(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        positive, ood_scores = [], []
        for member, part in zip(self.members, self.member_inputs(images)):
            probabilities, scores = member.assess(part)
            positive.append(probabilities[:, member.positive_index])
            ood_scores.append(scores)
        return self.combine(np.stack(positive, axis=1)), np.mean(ood_scores, axis=0)

    def explained_assessment(self, image: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        positive, ood_scores, heatmaps = [], [], []
        for member, part in zip(self.members, self.member_inputs(image[None])):
            probabilities, ood_score, member_heatmaps = member.explained_assessment(part[0])
            positive.append(probabilities[member.positive_index])
            ood_scores.append(ood_score)
            heatmaps.append([cv2.resize(np.asarray(member_heatmaps[member.class_names.index(name)], np.float32),
                                        (self.width, self.height), interpolation=cv2.INTER_LINEAR)
                             for name in self.class_names])
        mean = scaled_to_peak(np.mean(heatmaps, axis=0))  # (classes, height, width)
        return self.combine(np.array([positive]))[0], float(np.mean(ood_scores)), mean

    @property
    def explanation_method(self) -> str:
        methods = ", ".join(dict.fromkeys(member.explanation_method for member in self.members))
        return f"{EXPLANATION} ({methods})"


def check_members(members) -> None:
    """Members of one ensemble must speak of the same two classes."""
    first = members[0]
    for member in members[1:]:
        if member.class_names != first.class_names or member.positive_class != first.positive_class:
            raise ModelLoadError(f"{member.folder} has classes {member.class_names} (positive "
                                 f"{member.positive_class}); {first.folder} has {first.class_names}")
    if len(first.class_names) != 2:
        raise ModelLoadError("an ensemble averages P(positive) of binary models; "
                             f"{first.folder} has {len(first.class_names)} classes")
