"""One radiograph, every way it can reach us: each bundled model gives the same probability within 0.02.

The X-ray (train/PNEUMONIA/person1509_bacteria_3951.jpeg, Kermany et al. 2018, CC BY 4.0) is a real one from the
validation split, the one nearest every bundled model's threshold (tests/data/pick_near_threshold_xray.py,
re-run whenever a bundled model changes, last for the EfficientNet-Lite0 of 2026-12-06; a saturated image would
pass whatever the decoder did). Models trained before the intensity normalisation existed (`decoder_scale`) are
known to fail: a 16-bit PNG holding 12-bit data reaches them almost black.

A 2048 px bicubic upscale is not the same image: shrinking it back blurs it slightly. On this X-ray the CNN+LSTM
moves 0.027 and the MobileNetV2 0.043, the others at most 0.014; on the X-ray before it
(train/NORMAL/IM-0348-0001.jpeg) the CNN+LSTM moved 0.066, the MobileNetV2 0.118 and the first EfficientNet-Lite0
0.066 (`docs/experiments/resampling_moves.py` measures any X-ray). Over the whole validation split
(`docs/experiments/reencoding_moves.py --upscale 2048`) the upscale moves past 0.02 the CNN+LSTM on 3.5% of the
X-rays, the MobileNetV2 on 2.4%, the first EfficientNet-Lite0 on 6.7% (largest 0.200) and the released one, which
smooths its input and was fine-tuned on pairs of files of one X-ray, on 1.4% (largest 0.051).

The MobileNetV2 also moves with a plain JPEG re-encode (quality 95): 0.597 for rgb.jpg against 0.648 lossless on
this X-ray. Over the validation split (`docs/experiments/reencoding_moves.py`) a JPEG re-encode moves it past
0.02 on 1.2% of the X-rays (largest 0.050), the CNN+LSTM on 0.2% (largest 0.021), the first EfficientNet-Lite0 on
1.4% (largest 0.058), the ResNet50, the row LSTM and the released EfficientNet-Lite0 on none (largest 0.009, 0.004
and 0.015). Known shortfalls past the 0.02 goal, kept visible as strict xfails.
"""


import numpy as np
import pytest
from PIL import Image

from conftest import BUNDLED_MODELS, REPO, write_dicom

NEAR_THRESHOLD_XRAY = REPO / "tests" / "data" / "near_threshold_xray.jpeg"


def gray8():
    return np.asarray(Image.open(NEAR_THRESHOLD_XRAY).convert("L"))


def jpeg(path, array, **options):
    Image.fromarray(array).save(path, format="JPEG", quality=95, **options)


def exif_rotated_jpeg(path, array):
    """Stored on its side with EXIF orientation 6 ("rotate 90 degrees clockwise to view")."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(array, k=1)).save(path, format="JPEG", quality=95, exif=exif.tobytes())


def cmyk_jpeg(path, array):
    Image.fromarray(np.stack([array] * 3, -1)).convert("CMYK").save(path, format="JPEG", quality=95)


def sixteen_bit_png(path, array, bits):
    top = 2**bits - 1
    Image.fromarray((array.astype(np.uint32) * top // 255).astype(np.uint16)).save(path)


def dicom(path, array, **options):
    """12-bit stored values; MONOCHROME1 stores them inverted."""
    stored = array.astype(np.uint32) * 4095 // 255
    if options.get("photometric") == "MONOCHROME1":
        stored = 4095 - stored
    return write_dicom(path, stored.astype(np.uint16), **options)


VARIANTS = {
    "rgb.jpg": lambda p, a: jpeg(p, np.stack([a] * 3, -1)),
    "gray.png": lambda p, a: Image.fromarray(a).save(p),
    "gray16_full_range.png": lambda p, a: sixteen_bit_png(p, a, 16),
    "gray16_12_bit_data.png": lambda p, a: sixteen_bit_png(p, a, 12),
    "rgba.png": lambda p, a: Image.fromarray(np.dstack([a] * 3 + [np.full_like(a, 255)])).save(p),
    "image.bmp": lambda p, a: Image.fromarray(a).save(p),
    "image.tiff": lambda p, a: Image.fromarray(a).save(p),
    "progressive.jpg": lambda p, a: jpeg(p, a, progressive=True),
    "cmyk.jpg": cmyk_jpeg,
    "exif_rotated.jpg": exif_rotated_jpeg,
    "upscaled_2048.jpg": lambda p, a: jpeg(p, np.asarray(Image.fromarray(a).resize((2048, 2048), Image.BICUBIC))),
    "monochrome2.dcm": lambda p, a: dicom(p, a),
    "monochrome1.dcm": lambda p, a: dicom(p, a, photometric="MONOCHROME1"),
    # Physical value = 2 * stored - 1000; the window spans exactly the physical range of the data.
    "rescaled_windowed.dcm": lambda p, a: dicom(p, a, slope=2.0, intercept=-1000.0, window=(3095.0, 8190.0)),
}


@pytest.fixture(scope="module", params=BUNDLED_MODELS, ids=lambda p: p.name)
def predictor(request, bundled_predictors):
    return bundled_predictors[request.param.name]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encodings")
    array = gray8()
    for name, write in VARIANTS.items():
        write(folder / name, array)
    return folder


UPSCALED = "upscaled_2048.jpg"
# Known shortfalls on this X-ray (see the module docstring): how far each model moves past the 0.02 goal.
RESAMPLING_SENSITIVE = {"cnn-lstm": 0.027, "mobilenet-v2": 0.043}  # the upscaled copy vs the original
REDUCED_DECODE_SENSITIVE = {}  # reduced vs full decode of the upscaled copy (MobileNetV2: 0.026 on the X-ray before)
# the spread over every other encoding (the JPEG re-encodes: 0.597 for rgb.jpg against 0.648 for gray.png)
REENCODING_SENSITIVE = {"mobilenet-v2": 0.050}


def spread_over(predictor, encoded, names) -> tuple[float, dict]:
    probabilities = {name: predictor.predict_file(encoded / name).positive_probability for name in names}
    reference = predictor.predict_file(NEAR_THRESHOLD_XRAY).positive_probability
    assert 0.05 < reference < 0.95, "pick an X-ray nearer the threshold: a saturated one proves nothing"
    return max(probabilities.values()) - min(probabilities.values()), {n: round(p, 3) for n, p in probabilities.items()}


def test_every_encoding_of_one_xray_gets_the_same_probability(predictor, encoded, request):
    if predictor.preprocessing.intensity["method"] == "decoder_scale":
        request.node.add_marker(pytest.mark.xfail(strict=True, reason="trained before the intensity normalisation"))
    if predictor.name in REENCODING_SENSITIVE:
        request.node.add_marker(pytest.mark.xfail(
            strict=True, reason=f"spreads {REENCODING_SENSITIVE[predictor.name]:.3f} over the JPEG re-encodes"))
    spread, probabilities = spread_over(predictor, encoded, [name for name in VARIANTS if name != UPSCALED])
    assert spread <= 0.02, probabilities


def test_a_2048_px_upscaled_copy_gets_the_same_probability(predictor, encoded, request):
    if predictor.name in RESAMPLING_SENSITIVE:
        request.node.add_marker(pytest.mark.xfail(
            strict=True, reason=f"moves {RESAMPLING_SENSITIVE[predictor.name]:.3f} on the upscaled copy"))
    spread, probabilities = spread_over(predictor, encoded, ["gray.png", UPSCALED])
    assert spread <= 0.02, probabilities


def test_the_exif_rotation_is_undone_before_the_model_sees_the_image(encoded):
    from pneumo.imaging.decoding import read_grayscale

    upright, rotated = read_grayscale(encoded / "gray.png"), read_grayscale(encoded / "exif_rotated.jpg")
    assert rotated.shape == upright.shape
    assert np.abs(rotated - upright).mean() < 0.02


def test_a_full_size_jpeg_decodes_at_reduced_scale_with_the_same_probability(predictor, encoded, request):
    """libjpeg's 1/2..1/8 scale decode: a 2048 px JPEG reaches the model decoded no larger than it needs."""
    from pneumo.imaging.decoding import read_grayscale

    if predictor.name in REDUCED_DECODE_SENSITIVE:
        request.node.add_marker(pytest.mark.xfail(
            strict=True, reason=f"moves {REDUCED_DECODE_SENSITIVE[predictor.name]:.3f} from the full decode"))

    side = 2 * max(predictor.height, predictor.width)  # REDUCED_DECODE_FACTOR
    reduced = read_grayscale(encoded / "upscaled_2048.jpg", min_side=side)
    full = read_grayscale(encoded / "upscaled_2048.jpg")
    assert full.shape == (2048, 2048)
    assert reduced.shape[0] == reduced.shape[1] and side <= reduced.shape[0] < max(2 * side, 2048 // 8 + 1)
    from_full = predictor.predict_image(predictor.preprocessing.model_input(full, predictor.height, predictor.width)
                                        ).positive_probability
    assert predictor.predict_file(encoded / "upscaled_2048.jpg").positive_probability == pytest.approx(from_full, abs=0.02)


def test_only_jpeg_has_a_reduced_decode(encoded):
    from pneumo.imaging.decoding import read_grayscale

    assert read_grayscale(encoded / "gray.png", min_side=64).shape == read_grayscale(encoded / "gray.png").shape
