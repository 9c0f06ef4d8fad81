"""batch_eval.py: labeled and unlabeled folders, bad files, sharding and merging, usage errors."""

import json
import re
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import batch_eval
from conftest import (REPO, assert_close, bad_files, copy_with_threshold, synthetic_xray, write_folder_with_bad_files,
                      write_synthetic_class_folders)

BAD_FILES = bad_files()


@pytest.fixture(scope="module")
def labeled_folder(tmp_path_factory):
    """test/normal and test/PNEUMONIA (mixed case) with 6 good images each, and bad files among them."""
    return write_folder_with_bad_files(tmp_path_factory.mktemp("labeled"), 6, seed=50,
                                       folder_names=("normal", "PNEUMONIA"))


@pytest.fixture(scope="module")
def eager_model(tiny_model_folder, tmp_path_factory):
    """The tiny model with threshold 0: it calls every X-ray PNEUMONIA, so every NORMAL one is a mistake."""
    return copy_with_threshold(tiny_model_folder, tmp_path_factory.mktemp("eager") / "tiny-eager", "tiny-eager", 0.0)


def run(*args):
    return batch_eval.main([str(a) for a in args])


# The two costly reports (the figures, the metrics' bootstrap intervals), for runs whose test reads neither.
QUICK = ("--no-figures", "--no-intervals")


def test_a_labeled_folder_gets_predictions_metrics_and_every_report(labeled_folder, tiny_model_folder, tmp_path):
    out = tmp_path / "out"
    assert run(labeled_folder, "--out", out, "--model", tiny_model_folder) == 0
    model_dir = out / tiny_model_folder.name
    for name in ("predictions.csv", "classification_report.csv", "confusion_matrix.csv", "confusion_matrix.png",
                 "roc_curve.png", "reliability_diagram.png", "metrics.json"):
        assert (model_dir / name).exists(), name
    for name in ("comparison.csv", "comparison.png", "disagreements.csv", "skipped.csv"):
        assert (out / name).exists(), name
    predictions = pd.read_csv(model_dir / "predictions.csv", keep_default_na=False)
    assert list(predictions.columns) == ["file", "true_label", "probability_pneumonia", "predicted_label", "threshold",
                                         "ood_score", "out_of_distribution", "verdict"]
    assert len(predictions) == 12 and set(predictions.true_label) == {"NORMAL", "PNEUMONIA"}
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["image_count"] == 12 and metrics["skipped_count"] == 6
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
    report = pd.read_csv(model_dir / "classification_report.csv", index_col=0)
    assert list(report.index) == ["NORMAL", "PNEUMONIA", "accuracy", "macro avg", "weighted avg"]
    assert report.loc["accuracy", "f1-score"] == pytest.approx(metrics["accuracy"])
    assert not (model_dir / "heatmaps").exists()  # only when asked for


def test_heatmaps_show_the_most_confident_mistakes_with_the_models_own_method(labeled_folder, eager_model, tmp_path):
    # --gradcam: the older name of --heatmaps.
    assert run(labeled_folder, "--out", tmp_path, "--model", eager_model, "--gradcam", "2", *QUICK) == 0
    model_dir = tmp_path / eager_model.name
    predictions = pd.read_csv(model_dir / "predictions.csv")
    mistaken = predictions[predictions.true_label != predictions.predicted_label]
    assert len(mistaken) == 6 and set(mistaken.true_label) == {"NORMAL"}  # more mistakes than heatmaps asked for
    # The model was surest of the NORMAL X-rays it gave the highest P(pneumonia).
    surest = mistaken.sort_values(["probability_pneumonia", "file"], ascending=[False, True]).file[:2]
    mistakes = pd.read_csv(model_dir / "heatmaps" / "index.csv")
    assert list(mistakes.file) == list(surest)
    assert list(mistakes.heatmap_method) == ["Grad-CAM", "Grad-CAM"]
    assert {path.name for path in (model_dir / "heatmaps").iterdir()} == {"index.csv", *mistakes.overlay}
    for name in mistakes.overlay:
        overlay = np.asarray(Image.open(model_dir / "heatmaps" / name).convert("RGB"))
        assert overlay.ndim == 3 and overlay.std() > 0, name


def test_every_bad_file_is_skipped_with_its_reason(labeled_folder, tiny_model_folder, tmp_path):
    run(labeled_folder, "--out", tmp_path, "--model", tiny_model_folder, *QUICK)
    skipped = pd.read_csv(tmp_path / "skipped.csv").set_index("file").reason.to_dict()
    assert set(skipped) == {"test/PNEUMONIA/tiny.png", "test/normal/bomb.png", "test/normal/empty.png",
                            "test/normal/notes.txt", "test/normal/report.png", "test/normal/truncated.jpeg"}
    assert skipped["test/normal/empty.png"] == "the file is empty"
    assert "not an image" in skipped["test/normal/notes.txt"]
    assert "too small" in skipped["test/PNEUMONIA/tiny.png"]
    assert "too large" in skipped["test/normal/bomb.png"]
    assert "not an image" in skipped["test/normal/report.png"]
    assert "truncated or corrupt" in skipped["test/normal/truncated.jpeg"]


def test_an_unlabeled_folder_gets_predictions_only(tiny_model_folder, tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(synthetic_xray(seed=i)).save(folder / f"scan{i}.png")
    out = tmp_path / "out"
    assert run(folder, "--out", out, "--model", tiny_model_folder) == 0
    predictions = pd.read_csv(out / tiny_model_folder.name / "predictions.csv", keep_default_na=False)
    assert list(predictions.true_label) == ["", "", ""]
    metrics = json.loads((out / tiny_model_folder.name / "metrics.json").read_text())
    assert metrics["image_count"] == 3 and "accuracy" not in metrics
    assert not (out / tiny_model_folder.name / "confusion_matrix.csv").exists()


def test_two_models_are_compared_and_their_disagreements_listed(labeled_folder, tiny_model_folder, stricter_model,
                                                                tmp_path):
    run(labeled_folder, "--out", tmp_path, "--model", tiny_model_folder, "--model", stricter_model, *QUICK)
    comparison = pd.read_csv(tmp_path / "comparison.csv")
    assert list(comparison.model) == [tiny_model_folder.name, "tiny-stricter"]
    first = pd.read_csv(tmp_path / tiny_model_folder.name / "predictions.csv").set_index("file")
    second = pd.read_csv(tmp_path / "tiny-stricter" / "predictions.csv").set_index("file")
    expected = sorted(first.index[first.predicted_label != second.predicted_label])
    listed = pd.read_csv(tmp_path / "disagreements.csv")
    assert list(listed.file) == expected
    assert list(listed[f"{tiny_model_folder.name} predicted_label"]) == list(first.loc[expected, "predicted_label"])


def test_without_a_model_every_bundled_model_is_scored_compared_and_any_two_disagreeing_listed(
        labeled_folder, tiny_model_folder, stricter_model, eager_model, tmp_path, monkeypatch):
    from pneumo.batch import reports
    from pneumo.hub import bundled

    shown = {"Tiny": ("PNEUMO_TEST_TINY_MODEL", tiny_model_folder),
             "Strict": ("PNEUMO_TEST_STRICT_MODEL", stricter_model), "Eager": ("PNEUMO_TEST_EAGER_MODEL", eager_model)}
    monkeypatch.setattr(bundled, "BUNDLED_MODELS", shown)
    figures = []
    monkeypatch.setattr(reports, "plot_comparison",
                        lambda models, metric_names, path: figures.append(list(models)))
    assert run(labeled_folder, "--out", tmp_path / "out", "--no-intervals") == 0  # the figures name the models
    names = [tiny_model_folder.name, "tiny-stricter", "tiny-eager"]
    comparison = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert list(comparison.model) == names and list(comparison.images) == [12] * 3
    assert figures == [list(shown)]  # the figure names them as the demo does
    labels = pd.DataFrame({name: pd.read_csv(tmp_path / "out" / name / "predictions.csv").set_index("file")
                           .predicted_label for name in names})
    assert set(labels["tiny-eager"]) == {"PNEUMONIA"}
    expected = sorted(labels.index[labels.nunique(axis=1) > 1])
    listed = pd.read_csv(tmp_path / "out" / "disagreements.csv")
    assert list(listed.file) == expected and expected
    for name in names:
        assert list(listed[f"{name} predicted_label"]) == list(labels.loc[expected, name])
        assert listed[f"{name} probability_pneumonia"].between(0, 1).all()


def test_threshold_overrides_every_models_own(labeled_folder, tiny_model_folder, tmp_path):
    run(labeled_folder, "--out", tmp_path, "--model", tiny_model_folder, "--threshold", "0.999", *QUICK)
    predictions = pd.read_csv(tmp_path / tiny_model_folder.name / "predictions.csv")
    assert set(predictions.threshold) == {0.999}
    expected = ["PNEUMONIA" if p >= 0.999 else "NORMAL" for p in predictions.probability_pneumonia]
    assert list(predictions.predicted_label) == expected
    assert json.loads((tmp_path / tiny_model_folder.name / "metrics.json").read_text())["threshold"] == 0.999


def test_merging_runs_of_different_models_is_one_line_and_exit_2(labeled_folder, tiny_model_folder, stricter_model,
                                                                 tmp_path):
    run(labeled_folder, "--out", tmp_path / "a", "--model", tiny_model_folder, *QUICK)
    run(labeled_folder, "--out", tmp_path / "b", "--model", stricter_model, *QUICK)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "run.json").write_text((tmp_path / "a" / "run.json").read_text())  # but no predictions
    for runs, words in ((["a", "b"], "different models"), (["a", "c"], "predictions.csv is missing")):
        result = subprocess.run([sys.executable, str(REPO / "batch_eval.py"), "merge",
                                 *[str(tmp_path / r) for r in runs], "--out", str(tmp_path / "merged")],
                                capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                                timeout=300)
        assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr


def test_three_shards_merged_equal_the_single_run(labeled_folder, tiny_model_folder, tmp_path):
    run(labeled_folder, "--out", tmp_path / "single", "--model", tiny_model_folder, *QUICK)
    shards = [tmp_path / f"shard{i}" for i in range(3)]
    for i, shard in enumerate(shards):
        run(labeled_folder, "--out", shard, "--model", tiny_model_folder, "--shard", f"{i}/3", *QUICK)
    sizes = [len(pd.read_csv(s / tiny_model_folder.name / "predictions.csv")) for s in shards]
    assert sum(sizes) == 12 and max(sizes) < 12
    assert run("merge", *shards, "--out", tmp_path / "merged", *QUICK) == 0
    name = tiny_model_folder.name
    merged, single = tmp_path / "merged", tmp_path / "single"
    # Shards batch other images together, and TensorFlow's CPU kernels may round a batch differently:
    # text and counts must match exactly, floats within a tolerance.
    for relative in (f"{name}/predictions.csv", f"{name}/classification_report.csv", f"{name}/confusion_matrix.csv",
                     "comparison.csv", "disagreements.csv", "skipped.csv"):
        left, right = pd.read_csv(merged / relative), pd.read_csv(single / relative)
        if "ood_score" in left:  # a Mahalanobis distance magnifies those last digits: compare it relatively
            assert np.allclose(left.pop("ood_score"), right.pop("ood_score"), rtol=1e-3, atol=0)
        pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=0, atol=1e-6, obj=relative)
    assert_close(json.loads((merged / name / "metrics.json").read_text()),
                 json.loads((single / name / "metrics.json").read_text()))


def test_a_finished_run_leaves_no_parts_and_no_half_written_files(labeled_folder, eager_model, tmp_path):
    """Scores go to the hidden .parts/ folder while a run is under way, and every report is written under a hidden
    temporary name and then moved into place (pneumo.files): once the run has finished, nothing hidden is left
    at any depth. Every kind of report is written: tables, figures and heatmaps."""
    from pneumo.batch.scoring import PARTS_FOLDER

    assert run(labeled_folder, "--out", tmp_path, "--model", eager_model, "--heatmaps", "2") == 0
    assert (tmp_path / eager_model.name / "heatmaps" / "index.csv").exists()
    assert not (tmp_path / PARTS_FOLDER).exists()
    hidden = [path for path in tmp_path.rglob("*")
              if any(part.startswith(".") for part in path.relative_to(tmp_path).parts)]
    assert hidden == []


def test_an_empty_folder_scores_nothing_and_exits_1(tiny_model_folder, tmp_path):
    (tmp_path / "empty").mkdir()
    assert run(tmp_path / "empty", "--out", tmp_path / "out", "--model", tiny_model_folder) == 1


@pytest.mark.parametrize("args, message", [
    (["/no/such/folder", "--out", "{tmp}/out"], "no such folder"),
    (["{examples}", "--out", "{tmp}/out", "--model", "{tmp}/no-model"], "no such model folder"),
    (["{examples}", "--out", "/proc/forbidden/out"], "--out"),
    (["{examples}", "--out", "{tmp}/out", "--shard", "3/3"], "0 <= I < N"),
])
def test_bad_usage_is_one_line_and_exit_2(tmp_path, args, message):
    args = [a.format(tmp=tmp_path, examples=REPO / "examples") for a in args]
    result = subprocess.run([sys.executable, str(REPO / "batch_eval.py"), *args], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_missing_bundled_folder_says_how_to_point_at_it_or_leave_it_out(labeled_folder, tiny_model_folder,
                                                                          tmp_path, monkeypatch, capsys):
    from pneumo.hub import bundled

    shown = {"Tiny": ("PNEUMO_TEST_TINY_MODEL", tiny_model_folder),
             "Gone": ("PNEUMO_TEST_GONE_MODEL", tmp_path / "gone")}
    monkeypatch.setattr(bundled, "BUNDLED_MODELS", shown)
    with pytest.raises(SystemExit) as exit_status:
        run(labeled_folder, "--out", tmp_path / "out")
    assert exit_status.value.code == 2
    assert "set PNEUMO_TEST_GONE_MODEL to the Gone's Hub repo, or PNEUMO_MODELS" in capsys.readouterr().err


@pytest.fixture(scope="module")
def large_folder(tmp_path_factory):
    """Enough images that a run scoring one at a time lasts a few seconds, with bad files among them."""
    root = tmp_path_factory.mktemp("large")
    write_synthetic_class_folders(root, 150, seed=80)
    for name, content in BAD_FILES.items():
        (root / "NORMAL" / name).write_bytes(content)
    return root


def test_a_killed_run_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(large_folder, tiny_model_folder,
                                                                                 tmp_path):
    import signal
    import time

    from pneumo.batch.scoring import PARTS_FOLDER, read_parts, run_folder
    from pneumo.prediction.predictor import Predictor

    out, parts = tmp_path / "resumed", tmp_path / "resumed" / PARTS_FOLDER / tiny_model_folder.name
    command = [sys.executable, str(REPO / "batch_eval.py"), str(large_folder), "--out", str(out),
               "--model", str(tiny_model_folder), "--batch-size", "1", *QUICK]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.csv"))) < 5 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL, "the run ended before it could be interrupted"
    already = len(read_parts(parts))
    assert 5 <= already < 300 + len(BAD_FILES)
    assert not (out / tiny_model_folder.name / "predictions.csv").exists()

    predictor = Predictor.from_folder(tiny_model_folder)
    scored, assess = [], predictor.assess
    predictor.assess = lambda images: (scored.append(len(images)), assess(images))[1]
    run_folder(large_folder, out, [predictor], batch_size=1, show_progress=False, resume=True, figures=False,
               intervals=False)
    assert sum(scored) <= 300 + len(BAD_FILES) - already  # nothing scored twice
    assert not (out / PARTS_FOLDER).exists()

    uninterrupted = tmp_path / "uninterrupted"
    assert run(large_folder, "--out", uninterrupted, "--model", tiny_model_folder, "--batch-size", "1", *QUICK) == 0
    for path in sorted(uninterrupted.rglob("*")):
        if path.suffix in (".csv", ".json") and path.name != "run.json":
            assert (out / path.relative_to(uninterrupted)).read_text() == path.read_text(), path.name


def test_resuming_with_other_settings_is_refused(labeled_folder, tiny_model_folder, tmp_path, capsys):
    from pneumo.batch.scoring import PARTS_FOLDER, RUN_FILE

    out = tmp_path / "out"
    (out / PARTS_FOLDER).mkdir(parents=True)
    (out / PARTS_FOLDER / RUN_FILE).write_text(json.dumps({"folder": str(labeled_folder), "batch_size": 7}))
    assert run(labeled_folder, "--out", out, "--model", tiny_model_folder, "--resume") == 1
    error = capsys.readouterr().err
    assert "started with another" in error and "Traceback" not in error


def test_figures_are_at_print_resolution_and_the_metrics_carry_95_percent_intervals(labeled_folder, tiny_model_folder,
                                                                                    tmp_path):
    full, quick = tmp_path / "full", tmp_path / "quick"
    run(labeled_folder, "--out", full, "--model", tiny_model_folder)
    model_dir = full / tiny_model_folder.name
    figures = [model_dir / "confusion_matrix.png", model_dir / "roc_curve.png", model_dir / "reliability_diagram.png",
               full / "comparison.png"]
    for figure in figures:
        assert Image.open(figure).info["dpi"] == pytest.approx((200, 200), abs=0.5), figure.name
    metrics = json.loads((model_dir / "metrics.json").read_text())
    intervals = metrics.pop("confidence_intervals_95")
    assert {"accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc"} <= set(intervals)
    # --no-figures and --no-intervals leave out those two, and nothing else changes.
    run(labeled_folder, "--out", quick, "--model", tiny_model_folder, *QUICK)

    def written(out):
        return sorted(path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file())

    assert written(quick) == [path for path in written(full) if not path.endswith(".png")]
    metrics_file = f"{tiny_model_folder.name}/metrics.json"
    assert json.loads((quick / metrics_file).read_text()) == metrics
    for relative in set(written(quick)) - {metrics_file, "comparison.csv"}:
        assert (quick / relative).read_text() == (full / relative).read_text(), relative
    without = [pd.read_csv(out / "comparison.csv").filter(regex="^(?!.*_(low|high)$)") for out in (quick, full)]
    pd.testing.assert_frame_equal(*without)


def test_figures_name_the_bundled_models_as_the_demo_does(monkeypatch):
    from pneumo.hub.bundled import BUNDLED_MODELS, display_name

    for variable, _ in BUNDLED_MODELS.values():
        monkeypatch.delenv(variable, raising=False)
    for name, (_, folder) in BUNDLED_MODELS.items():
        assert display_name(str(folder)) == name
    assert display_name("elsewhere/my-model") is None


def test_help_describes_folder_out_the_layout_and_the_exit_codes_without_tensorflow_noise():
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, str(REPO / "batch_eval.py"), "--help"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0 and result.stderr == ""
    for words in ("FOLDER", "--out DIR", "predictions.csv", "reliability_diagram.png", "comparison.png", "skipped.csv",
                  "exit status", "1  nothing was scored", "2  bad usage"):
        assert words in result.stdout, words


def test_a_second_run_into_a_used_out_is_refused_in_one_line_naming_resume_and_overwrite(
        labeled_folder, tiny_model_folder, stricter_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert batch_eval.main([str(labeled_folder), "--out", str(out), "--model", str(tiny_model_folder),
                            "--no-figures", "--no-intervals"]) == 0
    written = sorted(path.relative_to(out) for path in out.rglob("*"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        batch_eval.main([str(labeled_folder), "--out", str(out), "--model", str(stricter_model), "--no-figures"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "holds the reports of another run" in error and "--resume" in error and "--overwrite" in error
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == written


def test_overwrite_clears_what_the_last_run_wrote_and_nothing_else(labeled_folder, tiny_model_folder, stricter_model,
                                                                  tmp_path):
    out = tmp_path / "out"
    assert batch_eval.main([str(labeled_folder), "--out", str(out), "--model", str(tiny_model_folder),
                            "--model", str(stricter_model), "--no-figures", "--no-intervals"]) == 0
    (out / "my-notes.txt").write_text("the user's own")
    assert batch_eval.main([str(labeled_folder), "--out", str(out), "--model", str(stricter_model), "--overwrite",
                            "--no-figures", "--no-intervals"]) == 0
    assert not (out / "tiny-cnn-lstm").exists()  # the first run's other model is gone
    assert (out / "my-notes.txt").read_text() == "the user's own"
    assert list(json.loads((out / "run.json").read_text())["models"]) == [stricter_model.name]


def test_an_unlabeled_run_says_what_it_decided_and_which_files_look_unlike_a_chest_xray(tiny_model_folder, tmp_path,
                                                                                       capsys):
    from ood_probes import not_chest_xrays

    folder = tmp_path / "incoming"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(synthetic_xray(seed=i, opacity=i % 2 == 1)).save(folder / f"scan{i}.png")
    for name, data in list(not_chest_xrays().items())[:3]:
        (folder / f"{name.replace(' ', '_')}.png").write_bytes(data)
    out = tmp_path / "out"
    assert run(folder, "--out", out, "--model", tiny_model_folder) == 0
    predictions = pd.read_csv(out / tiny_model_folder.name / "predictions.csv")
    metrics = json.loads((out / tiny_model_folder.name / "metrics.json").read_text())
    flagged = sorted(predictions.file[predictions.out_of_distribution.astype(bool)])
    # A flagged image gets no class: its verdict says so, and it is counted apart from the decisions.
    assert set(predictions.verdict[predictions.file.isin(flagged)]) == {"not a chest X-ray?"}
    decided = predictions[~predictions.file.isin(flagged)]
    assert (decided.verdict == decided.predicted_label).all()
    assert metrics["decisions"] == {label: int((decided.predicted_label == label).sum())
                                    for label in ("NORMAL", "PNEUMONIA")}
    assert sum(metrics["decisions"].values()) + len(flagged) == len(predictions) and flagged
    assert metrics["out_of_distribution"] == len(flagged) and metrics["out_of_distribution_files"] == flagged[:5]
    said = capsys.readouterr().out
    assert f"{tiny_model_folder.name}: decided NORMAL {metrics['decisions']['NORMAL']}, PNEUMONIA" in said
    assert all(name in said for name in flagged[:5])


def test_report_tables_are_rounded_with_integer_counts_and_the_comparison_has_ece_and_intervals(
        labeled_folder, tiny_model_folder, tmp_path):
    assert run(labeled_folder, "--out", tmp_path, "--model", tiny_model_folder, "--no-figures") == 0
    report = (tmp_path / tiny_model_folder.name / "classification_report.csv").read_text()
    comparison_text = (tmp_path / "comparison.csv").read_text()
    for text in (report, comparison_text):
        assert not any(len(number.split(".")[1]) > 4 for number in re.findall(r"\d+\.\d+", text))
    support = pd.read_csv(tmp_path / tiny_model_folder.name / "classification_report.csv").support
    assert support.dtype.kind == "i"
    comparison = pd.read_csv(tmp_path / "comparison.csv")
    metrics = json.loads((tmp_path / tiny_model_folder.name / "metrics.json").read_text())
    assert comparison.expected_calibration_error[0] == pytest.approx(metrics["expected_calibration_error"], abs=1e-4)
    low, high = metrics["confidence_intervals_95"]["sensitivity"]
    assert (comparison.sensitivity_low[0], comparison.sensitivity_high[0]) == (pytest.approx(low, abs=1e-4),
                                                                            pytest.approx(high, abs=1e-4))


@pytest.mark.parametrize("name", ["resnet50", "ResNet50", "RESNET50"])
def test_a_bundled_model_is_named_by_its_page_name_or_its_folders(name, monkeypatch, tmp_path):
    from pneumo.hub import bundled

    assert bundled.bundled_reference(name) == str(bundled.BUNDLED_MODELS["ResNet50"][1])
    monkeypatch.setenv("PNEUMO_MODELS", f"cnn-lstm,{name}")
    assert bundled.selected_models() == ["CNN+LSTM", "ResNet50"]


def test_batch_eval_scores_a_bundled_model_named_by_its_folder_from_anywhere(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # where no folder named cnn-lstm exists
    assert run(REPO / "examples", "--out", tmp_path / "out", "--model", "cnn-lstm", *QUICK) == 0
    assert len(pd.read_csv(tmp_path / "out" / "cnn-lstm" / "predictions.csv")) == 4
