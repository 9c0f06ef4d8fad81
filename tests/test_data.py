"""Image-folder discovery, the leakage-free patient split, class weights and the decoding of folders."""

from pathlib import Path

import numpy as np
import pytest

from pneumo.training import data

REAL_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray" / "train"


@pytest.mark.parametrize("filename, patient", [
    ("person1000_bacteria_2931.jpeg", "person1000"),
    ("person1000_virus_1681.jpeg", "person1000"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
    ("scan.png", "scan"),
])
def test_patient_id_from_filename(filename, patient):
    assert data.patient_id_from_filename(filename) == patient


def test_class_folders_are_found_in_any_case(tmp_path):
    for folder in ("Train/normal", "Train/Pneumonia/sub"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "Train/normal/IM-0001-0001.jpeg").write_bytes(b"x")
    (tmp_path / "Train/Pneumonia/sub/person1_virus_1.png").write_bytes(b"x")
    (tmp_path / "Train/normal/notes.txt").write_text("not an image")
    assert data.find_splits(tmp_path) == {"train": tmp_path / "Train"}
    frame = data.list_labeled_images(tmp_path / "Train")
    assert list(frame.class_name) == ["NORMAL", "PNEUMONIA"]
    assert list(frame.patient) == ["IM-0001", "person1"]


def test_a_folder_without_class_folders_is_refused(tmp_path):
    from pneumo.errors import PneumoError

    with pytest.raises(PneumoError, match="NORMAL"):
        data.list_labeled_images(tmp_path)


def test_labels_come_from_the_nearest_class_folder_at_any_depth():
    assert data.label_from_folders(Path("site/normal/2024/x.png")) == "NORMAL"
    assert data.label_from_folders(Path("NORMAL/pneumonia/x.png")) == "PNEUMONIA"
    assert data.label_from_folders(Path("incoming/x.png")) is None
    assert data.label_from_folders(Path("Effusion/x.png"), ("No finding", "Effusion")) == "Effusion"


def test_subgroups_from_file_names():
    assert data.subgroup_of("person1_bacteria_1.jpeg") == "pneumonia: bacterial"
    assert data.subgroup_of("train/PNEUMONIA/person2_virus_5.jpeg") == "pneumonia: viral"
    assert data.subgroup_of("NORMAL2-IM-1427-0001.jpeg") == "normal: NORMAL2-IM series"
    assert data.subgroup_of("IM-0115-0001.jpeg") == "normal: IM series"
    assert data.subgroup_of("scan.png") == "other"


@pytest.fixture(scope="module")
def real_split():
    if not REAL_TRAIN.exists():
        pytest.skip("the shared dataset is not beside this checkout")
    frame = data.list_labeled_images(REAL_TRAIN)
    return frame, data.split_by_patient(frame, 0.15, seed=42)


def test_no_patient_is_on_both_sides_of_the_real_split(real_split):
    frame, (train, validation) = real_split
    assert len(train) + len(validation) == len(frame) == 5216
    assert not set(train.patient) & set(validation.patient)


def test_no_duplicate_file_is_on_both_sides_of_the_real_split(real_split):
    import hashlib

    _, (train, validation) = real_split
    def digests(paths):
        return {hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}
    assert not digests(train.path) & digests(validation.path)


def test_the_real_split_is_stratified_and_about_15_percent(real_split):
    frame, (train, validation) = real_split
    assert 0.13 < len(validation) / len(frame) < 0.17
    assert abs(validation.label.mean() - frame.label.mean()) < 0.03


def test_the_split_is_reproducible_and_depends_on_the_seed(synthetic_dataset):
    frame = data.list_labeled_images(synthetic_dataset / "train")
    first = data.split_by_patient(frame, 0.25, seed=1)[1]
    again = data.split_by_patient(frame, 0.25, seed=1)[1]
    other = data.split_by_patient(frame, 0.25, seed=2)[1]
    assert list(first.path) == list(again.path)
    assert list(first.path) != list(other.path)


def test_class_weights_balance_the_classes():
    weights = data.class_weights([0] * 25 + [1] * 75)
    assert weights[0] * 25 == pytest.approx(weights[1] * 75)
    assert weights[0] == pytest.approx(2.0)


def test_training_batches_are_model_inputs_with_one_hot_labels(synthetic_dataset):
    frame = data.list_labeled_images(synthetic_dataset / "train")
    batches = data.training_batches(frame.path, frame.label, 64, batch_size=16, seed=0, num_classes=2)
    images, labels = batches[0]
    assert len(batches) == -(-len(frame) // 16)
    assert images.shape == (16, 64, 64, 3) and labels.shape == (16, 2)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert set(labels.sum(axis=1)) == {1.0}


def test_training_batches_depend_on_seed_epoch_and_image_only(synthetic_dataset):
    """Same batches whatever the worker count, new ones each epoch, and a resumed run's epoch equals the
    uninterrupted run's."""
    frame = data.list_labeled_images(synthetic_dataset / "train")

    def batches(**options):
        return data.training_batches(frame.path, frame.label, 32, batch_size=8, seed=3, **options)

    one_worker, four_workers = batches(workers=1), batches(workers=4)
    first = one_worker[1][0]
    assert np.array_equal(first, four_workers[1][0])
    one_worker.on_epoch_end()
    second = one_worker[1][0]
    assert not np.array_equal(first, second)
    assert np.array_equal(second, batches(first_epoch=1)[1][0])


def test_encoding_pairs_follow_each_image_with_the_same_picture_from_another_file(synthetic_dataset):
    frame = data.list_labeled_images(synthetic_dataset / "train")
    plain = data.training_batches(frame.path, frame.label, 64, batch_size=8, seed=5, num_classes=2)
    paired = data.training_batches(frame.path, frame.label, 64, batch_size=8, seed=5, num_classes=2,
                                   encoding_pairs=True)
    images, labels = paired[0]
    assert len(paired) == -(-len(frame) // 4)
    assert images.shape == (8, 64, 64, 3) and labels.shape == (8, 2)
    assert np.array_equal(labels[0::2], labels[1::2]) and np.array_equal(labels[0::2], plain[0][1][:4])
    last_images, last_labels = paired[len(paired) - 1]
    assert len(last_images) % 2 == 0 and np.array_equal(last_labels[0::2], last_labels[1::2])
    first, other_file = images[0::2], images[1::2]
    assert np.array_equal(first, plain[0][0][:4]), "the first of each pair is the unpaired run's acquisition"
    gaps = np.abs(first - other_file).mean(axis=(1, 2, 3))
    assert np.all(gaps < 0.05), gaps  # the same picture...
    assert np.any(gaps > 0), gaps  # ...through another file (a lossless copy at its own size can match exactly)


@pytest.mark.parametrize("method", ["decoder_scale", "equalize"])
def test_readable_batches_hold_the_one_image_path_in_order_and_say_why_the_rest_are_not(synthetic_dataset, tmp_path,
                                                                                        method):
    from pneumo.imaging.decoding import Preprocessing, load_model_input

    preprocessing = Preprocessing({"method": method})
    images = list(data.list_labeled_images(synthetic_dataset / "train").path[:5])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    paths = [images[0], tmp_path / "empty.png", *images[1:4], tmp_path / "notes.png", images[4]]

    batches = list(data.readable_batches(paths, lambda path: load_model_input(path, 64, 64, preprocessing),
                                         (64, 64, 3), batch_size=3))
    assert [positions.tolist() for _, positions, _ in batches] == [[0, 2], [3, 4], [6]]
    assert [len(errors) for _, _, errors in batches] == [1, 1, 0]
    assert "empty.png" in batches[0][2][0] and "notes.png" in batches[1][2][0]
    decoded = np.concatenate([arrays for arrays, _, _ in batches])
    for array, path in zip(decoded, images):
        assert np.array_equal(array, load_model_input(path, 64, 64, preprocessing))


def test_a_batch_with_nothing_readable_is_empty_not_an_error(tmp_path):
    from pneumo.imaging.decoding import load_model_input

    (tmp_path / "empty.png").write_bytes(b"")
    [(arrays, positions, errors)] = data.readable_batches([tmp_path / "empty.png"],
                                                          lambda path: load_model_input(path, 64, 64), (64, 64, 3))
    assert arrays.shape == (0, 64, 64, 3) and positions.tolist() == [] and len(errors) == 1


SPLIT_IN_A_FRESH_INTERPRETER = """
import sys
from pneumo.training import data
frame = data.list_labeled_images(sys.argv[1])
print("\\n".join(data.split_by_patient(frame, 0.15, seed=42)[1].path))
"""


def test_the_split_is_the_same_in_every_interpreter():
    """Python's str hash changes with PYTHONHASHSEED; the split must not."""
    import os
    import subprocess
    import sys

    if not REAL_TRAIN.exists():
        pytest.skip("the shared dataset is not beside this checkout")
    validation_files = []
    for hash_seed in ("1", "2"):
        result = subprocess.run([sys.executable, "-c", SPLIT_IN_A_FRESH_INTERPRETER, str(REAL_TRAIN)],
                                capture_output=True, text=True, check=True, timeout=300,
                                env={**os.environ, "PYTHONHASHSEED": hash_seed},
                                cwd=Path(__file__).resolve().parents[1])
        validation_files.append(result.stdout.split())
    assert len(validation_files[0]) > 700
    assert validation_files[0] == validation_files[1]
