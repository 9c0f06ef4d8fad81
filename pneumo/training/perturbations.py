"""What differs between X-ray machines and their processing, as functions of a decoded [0, 1] plane.

Two uses, one set of functions:
- training augments with random draws of them (`random_acquisition`), so a model cannot learn one
  machine's exposure, sharpness or compression as a sign of disease;
- `pneumo.training.robustness` scores the validation split under each of them at two fixed strengths (`SUITE`),
  like ImageNet-C for X-rays.

They act on the decoded image, before a model's own intensity normalisation, because that is where a
different machine or a different export differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np


def exposure(gray, gain: float, black_level: float) -> np.ndarray:
    """Detector gain and black level: `gain * gray + black_level`, clipped to [0, 1]."""
    return np.clip(gray * gain + black_level, 0.0, 1.0)


def gamma(gray, power: float) -> np.ndarray:
    """A different tone curve (power < 1 lifts the mid-greys, > 1 darkens them)."""
    return np.power(np.clip(gray, 0.0, 1.0), power)


def contrast(gray, factor: float) -> np.ndarray:
    """Contrast scaled by `factor` around the image's mean grey."""
    mean = float(np.mean(gray))
    return np.clip(mean + (gray - mean) * factor, 0.0, 1.0)


def blur(gray, sigma_fraction: float) -> np.ndarray:
    """Gaussian blur with sigma a fraction of the image side (a softer detector or a downsampled export)."""
    sigma = max(sigma_fraction * max(gray.shape), 1e-3)
    return cv2.GaussianBlur(np.asarray(gray, np.float32), (0, 0), sigma)


def sharpen(gray, amount: float, sigma_fraction: float = 0.01) -> np.ndarray:
    """Unsharp masking, the edge enhancement many CR/DX consoles apply."""
    gray = np.asarray(gray, np.float32)
    return np.clip(gray + amount * (gray - blur(gray, sigma_fraction)), 0.0, 1.0)


def noise(gray, sigma: float, seed: int = 0) -> np.ndarray:
    """Additive Gaussian noise (a lower dose, another detector)."""
    rng = np.random.default_rng(seed)
    return np.clip(gray + rng.normal(0.0, sigma, gray.shape), 0.0, 1.0)


def jpeg(gray, quality: int) -> np.ndarray:
    """Re-compressed as an 8-bit JPEG of that quality (an export, a screenshot, a forwarded file)."""
    encoded = cv2.imencode(".jpg", (np.clip(gray, 0, 1) * 255).round().astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])[1]
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0


def affine(gray, degrees: float = 0.0, zoom: float = 1.0, shift_x: float = 0.0, shift_y: float = 0.0):
    """Rotate by `degrees`, magnify by `zoom` (>1 crops the borders) and shift by fractions of the side.

    Borders are mirrored: a patient who stands a little rotated still fills the detector.
    """
    height, width = gray.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, zoom)
    matrix[:, 2] += (shift_x * width, shift_y * height)
    return cv2.warpAffine(np.asarray(gray, np.float32), matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


@dataclass(frozen=True)
class Perturbation:
    name: str
    apply: Callable  # apply(gray, seed) -> gray
    strength: str    # "mild" or "strong"
    description: str


def _suite() -> list[Perturbation]:
    """Each acquisition difference at two fixed strengths. The numbers are documented, not tuned."""
    table = [
        ("underexposed", "mild", lambda g, s: exposure(g, 0.85, 0.0), "gain 0.85"),
        ("underexposed", "strong", lambda g, s: exposure(g, 0.70, 0.0), "gain 0.70"),
        ("black_level", "mild", lambda g, s: exposure(g, 0.90, 0.08), "gain 0.90, black level +0.08"),
        ("black_level", "strong", lambda g, s: exposure(g, 0.80, 0.16), "gain 0.80, black level +0.16"),
        ("gamma_lighter", "mild", lambda g, s: gamma(g, 0.8), "gamma 0.8"),
        ("gamma_lighter", "strong", lambda g, s: gamma(g, 0.6), "gamma 0.6"),
        ("gamma_darker", "mild", lambda g, s: gamma(g, 1.25), "gamma 1.25"),
        ("gamma_darker", "strong", lambda g, s: gamma(g, 1.6), "gamma 1.6"),
        ("low_contrast", "mild", lambda g, s: contrast(g, 0.8), "contrast x0.8"),
        ("low_contrast", "strong", lambda g, s: contrast(g, 0.6), "contrast x0.6"),
        ("high_contrast", "mild", lambda g, s: contrast(g, 1.2), "contrast x1.2"),
        ("high_contrast", "strong", lambda g, s: contrast(g, 1.4), "contrast x1.4"),
        ("blur", "mild", lambda g, s: blur(g, 0.004), "Gaussian sigma 0.4% of the side"),
        ("blur", "strong", lambda g, s: blur(g, 0.008), "Gaussian sigma 0.8% of the side"),
        ("sharpen", "mild", lambda g, s: sharpen(g, 0.5), "unsharp mask, amount 0.5"),
        ("sharpen", "strong", lambda g, s: sharpen(g, 1.0), "unsharp mask, amount 1.0"),
        ("noise", "mild", lambda g, s: noise(g, 0.02, s), "Gaussian noise, sigma 0.02"),
        ("noise", "strong", lambda g, s: noise(g, 0.05, s), "Gaussian noise, sigma 0.05"),
        ("jpeg", "mild", lambda g, s: jpeg(g, 50), "JPEG quality 50"),
        ("jpeg", "strong", lambda g, s: jpeg(g, 20), "JPEG quality 20"),
        ("crop", "mild", lambda g, s: affine(g, zoom=1.06), "borders cropped, zoom 1.06"),
        ("crop", "strong", lambda g, s: affine(g, zoom=1.12), "borders cropped, zoom 1.12"),
        ("rotation", "mild", lambda g, s: affine(g, degrees=5), "rotated 5 degrees"),
        ("rotation", "strong", lambda g, s: affine(g, degrees=10), "rotated 10 degrees"),
    ]
    return [Perturbation(name, apply, strength, description) for name, strength, apply, description in table]


SUITE = _suite()


def perturb(gray, perturbation: Perturbation, seed: int) -> np.ndarray:
    return np.asarray(perturbation.apply(np.asarray(gray, np.float32), seed), dtype=np.float32)


AUGMENTATION_SUMMARY = ("each with probability 0.5, strengths drawn uniformly up to the strong end of the "
                        "robustness suite: gain 0.7-1.15 with black level 0-0.16, gamma 0.6-1.6, contrast "
                        "x0.6-1.4, blur or unsharp masking, Gaussian noise up to sigma 0.05, JPEG quality 20-95; "
                        "always rotation +-10 deg, zoom 0.9-1.12, shift +-6%; no flips (a mirrored chest puts "
                        "the heart on the wrong side)")


# The longest side of an upscaled copy, at most (or twice the picture's, if larger): the upscaled copy of
# tests/test_encodings.py, and far below the decoder's MAX_PIXELS for pictures decoded at up to 4x a 224 px input.
MAX_UPSCALED_SIDE = 2048


def as_another_file(gray, rng: np.random.Generator) -> bytes:
    """The same picture saved as another file, one a site might send: a JPEG re-encode (quality 70-100) or a PNG,
    at its own size or upscaled (bicubic, 2 to 9.2 times, to at most MAX_UPSCALED_SIDE, as a scanner or a PACS
    export does). Read back through the model's own decoding, it should get the probability the picture gets
    (tests/test_encodings.py); training with `encoding_pairs` asks for that explicitly.
    """
    pixels = (np.clip(gray, 0, 1) * 255).round().astype(np.uint8)
    if rng.random() < 0.5:
        longest = max(pixels.shape)
        side = min(int(round(longest * rng.uniform(2.0, 9.2))), max(MAX_UPSCALED_SIDE, 2 * longest))
        scale = side / longest
        pixels = cv2.resize(pixels, (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale)),
                            interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.25:
        return cv2.imencode(".png", pixels)[1].tobytes()
    return cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 101))])[1].tobytes()


def random_acquisition(gray, rng: np.random.Generator) -> np.ndarray:
    """One random acquisition of the same chest: the training augmentation (see AUGMENTATION_SUMMARY)."""
    gray = np.asarray(gray, np.float32)
    if rng.random() < 0.5:
        gray = exposure(gray, rng.uniform(0.7, 1.15), rng.uniform(0.0, 0.16))
    if rng.random() < 0.5:
        gray = gamma(gray, float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)))))
    if rng.random() < 0.5:
        gray = contrast(gray, rng.uniform(0.6, 1.4))
    if rng.random() < 0.5:
        gray = blur(gray, rng.uniform(0.001, 0.008)) if rng.random() < 0.5 else sharpen(gray, rng.uniform(0.2, 1.0))
    if rng.random() < 0.5:
        gray = noise(gray, rng.uniform(0.0, 0.05), int(rng.integers(2**31)))
    if rng.random() < 0.5:
        gray = jpeg(gray, int(rng.integers(20, 96)))
    gray = affine(gray, degrees=rng.uniform(-10, 10), zoom=rng.uniform(0.9, 1.12),
                  shift_x=rng.uniform(-0.06, 0.06), shift_y=rng.uniform(-0.06, 0.06))
    return np.clip(gray, 0.0, 1.0).astype(np.float32)
