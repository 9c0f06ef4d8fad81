"""A run that makes no progress stops, says which stage stalled and what to check, and keeps what it scored, so
that --resume completes it (pneumo.batch.watchdog). The Ray engine's stall is in test_batch_ray.py.

Each stall here is made on purpose, in a batch_eval.py process of its own: a read that never returns (as from a
lost network mount), which the interrupt reaches, and a model call that swallows the interrupt (as code inside a
C call does), which the watchdog ends after its grace period.
"""

import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, write_synthetic_class_folders
from test_batch_ray import assert_same_table, read_csv

# batch_eval.py with one stage made to stall after `after` calls: argv is STAGE AFTER then batch_eval's arguments.
STALLING_DRIVER = """
import sys, threading
import batch_eval
from pneumo.batch import watchdog
from pneumo.prediction.predictor import Predictor

stage, after = sys.argv[1], int(sys.argv[2])
watchdog.GRACE_S = 2
calls, never = [], threading.Event()
if stage == "reading":
    load_image = Predictor.load_image

    def stalling_load_image(self, source):
        calls.append(source)
        if len(calls) > after:
            never.wait()  # interruptible: the interrupt reaches the main thread, which waits for this one
        return load_image(self, source)

    Predictor.load_image = stalling_load_image
else:
    assess = Predictor.assess

    def stalling_assess(self, images):
        calls.append(len(images))
        while len(calls) > after:
            try:
                never.wait()
            except KeyboardInterrupt:  # swallowed, as inside a C call
                pass
        return assess(self, images)

    Predictor.assess = stalling_assess
batch_eval.exit_with(batch_eval.main(sys.argv[3:]))
"""
STALL_S = 3
IMAGES = 12  # batches of 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("stall-xrays")
    write_synthetic_class_folders(root, IMAGES // 2, seed=33)
    return root


@pytest.fixture(scope="module")
def uninterrupted(folder, tiny_model_folder, tmp_path_factory):
    import batch_eval

    out = tmp_path_factory.mktemp("uninterrupted")
    assert batch_eval.main([str(folder), "--out", str(out), "--model", str(tiny_model_folder), "--batch-size", "2",
                            "--no-figures", "--no-intervals"]) == 0
    return out


@pytest.mark.parametrize("stage, after, doing", [
    ("reading", 4, "while reading and decoding the files; check that every node reaches the folder"),
    ("scoring", 2, "while scoring; check that every node can load the model"),
])
def test_a_stalled_run_stops_in_time_says_where_and_resumes(stage, after, doing, folder, tiny_model_folder,
                                                             uninterrupted, tmp_path):
    from pneumo.batch.scoring import PARTS_FOLDER, read_parts
    from pneumo.batch.watchdog import STALLED_EXIT_STATUS

    arguments = [str(folder), "--out", str(tmp_path), "--model", str(tiny_model_folder), "--batch-size", "2",
                 "--no-figures", "--no-intervals"]
    started = time.monotonic()
    stalled = subprocess.run([sys.executable, "-c", STALLING_DRIVER, stage, str(after), *arguments,
                              "--stall-timeout", str(STALL_S)], cwd=REPO, capture_output=True, text=True,
                             timeout=300, check=False)
    took = time.monotonic() - started
    assert stalled.returncode == STALLED_EXIT_STATUS, stalled.stderr[-3000:]
    message = stalled.stderr.strip().splitlines()[-1]
    assert message.startswith(f"batch_eval.py: {folder}: stopped, no progress for {STALL_S} s {doing}")
    assert message.endswith("run the same command with --resume to go on (--stall-timeout sets the wait)")
    assert took < 120  # importing TensorFlow and scoring 4 images, the stall, its grace (2 s): not the default 300 s
    kept = read_parts(tmp_path / PARTS_FOLDER / tiny_model_folder.name)
    assert len(kept) == 4  # the two batches scored before the stall
    import batch_eval

    assert batch_eval.main([*arguments, "--resume"]) == 0
    for table in ("tiny-cnn-lstm/predictions.csv", "skipped.csv", "comparison.csv"):
        assert_same_table(read_csv(tmp_path / table), read_csv(uninterrupted / table), table)


def test_the_stalled_stage_is_the_one_that_waited_longest_among_those_not_done():
    from pneumo.batch.watchdog import Watchdog

    watchdog = Watchdog(10, "folder")
    watchdog.begin(reading=4, scoring=4)
    now = time.monotonic()
    assert watchdog.stalled_stage(now) is None  # nothing has waited 10 s yet
    watchdog.advance("scoring")  # a model loaded: scoring moved last, reading waits longest
    assert watchdog.stalled_stage(time.monotonic() + 11) == "reading"
    watchdog.advance("reading", 4)  # every file read: what is left waits on scoring
    assert watchdog.stalled_stage(time.monotonic() + 11) == "scoring"
    watchdog.advance("scoring", 4)
    assert watchdog.stalled_stage(time.monotonic() + 11) is None  # all done: nothing to stop
    watchdog.begin(listing=None)
    assert watchdog.stalled_stage(time.monotonic() + 11) == "listing"
    assert Watchdog(0, "folder").stall_s is None  # 0: never stop


def test_progress_counted_elsewhere_is_progress():
    """The Ray engine's workers count their steps on an actor, which the watchdog polls."""
    from pneumo.batch.watchdog import Watchdog

    counts = {"reading": (0, 0)}
    watchdog = Watchdog(10, "folder", poll=lambda: counts)
    watchdog.begin(reading=8, scoring=8)
    counts = {"reading": (2, 8), "scoring": (1, 0)}
    watchdog.poll = lambda: counts
    watchdog.take_polled()
    assert watchdog.remaining == {"reading": 0, "scoring": 8}
    assert watchdog.stalled_stage(time.monotonic() + 11) == "scoring"


def test_work_started_and_never_finished_is_the_stage_to_blame():
    """A read that hangs while other reads end and the model scores on: reading is blamed, not scoring."""
    from pneumo.batch.watchdog import Watchdog

    watchdog = Watchdog(10, "folder")
    watchdog.begin(reading=8, scoring=8)
    hanging = watchdog.working("reading")
    hanging.__enter__()
    with watchdog.working("reading"):
        pass
    with watchdog.working("scoring", 4):
        pass
    assert watchdog.stalled_stage(time.monotonic() + 11) == "reading"
    hanging.__exit__(None, None, None)  # that read ends after all: scoring has now waited longest
    assert watchdog.stalled_stage(time.monotonic() + 11) == "scoring"


def test_a_run_that_ends_as_the_stall_is_found_returns_its_result(monkeypatch):
    """The signal sent as the run ended is taken inside the watchdog, and the run's result stands."""
    from pneumo.batch.watchdog import Watchdog

    watchdog = Watchdog(0.2, "folder", interval_s=0.05)
    handler = signal.getsignal(signal.SIGINT)
    with watchdog:
        watchdog.begin(scoring=1)
        while watchdog.message is None:  # the watchdog finds the stall and signals; the run ends at that moment
            try:
                time.sleep(0.01)
            except KeyboardInterrupt:
                break
    assert watchdog.message is not None and signal.getsignal(signal.SIGINT) is handler


def test_a_real_ctrl_c_during_a_run_goes_to_the_handler_there_was():
    from pneumo.batch.watchdog import Watchdog

    calls = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: calls.append(number))
    try:
        with Watchdog(60, "folder"):
            signal.raise_signal(signal.SIGINT)
        assert calls == [signal.SIGINT]
        with pytest.raises(KeyboardInterrupt):
            signal.signal(signal.SIGINT, signal.default_int_handler)
            with Watchdog(60, "folder"):
                signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_keys_written_into_a_uri_are_never_shown():
    from pneumo.batch.storage import shown

    assert shown("s3://AKIA123:secret%2Fkey@my-bucket/xrays") == "s3://my-bucket/xrays"  # as a URI must write it
    assert shown("s3://my-bucket/xrays") == "s3://my-bucket/xrays"
    assert shown("/data/user@host/xrays") == "/data/user@host/xrays"
