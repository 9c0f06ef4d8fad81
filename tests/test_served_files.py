"""The files the demo serves: written into Gradio's cache (Gradio serves them as they are, with no copy of its
own), deleted by one thread when their time comes, a report's entry gone with its file, the empty files Gradio
leaves swept, everything deleted when the demo stops, and what a killed run left deleted when the next one starts."""

import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pneumo.demo import served_files
from pneumo.demo.served_files import (
    CACHE_SWEEP_S,
    EMPTY_FILE_AGE_S,
    IMAGE_LIFETIME_S,
    IMAGE_PREFIX,
    REPORT_LIFETIME_S,
    REPORT_PREFIX,
    UPLOAD_LIFETIME_S,
    OneTimeFiles,
    Reaper,
    clean_up_at_stop,
    gradio_cache_folder,
    remove_empty_files,
    remove_leftovers,
    served_png,
)

# Names as Gradio gives them in its cache: a folder per upload (the SHA-256 of its content), tempfile's names.
UPLOAD_FOLDER = "c8d4dd96c5c90b8a70b741b2801f9e5ae24719896428bd698e444f70e3a84102"
OTHER_UPLOAD_FOLDER = "e19de17d226470b7c794f6e5638d0be82c697335fd1ba38b26531b5f6ff9ae21"


@pytest.fixture
def temp_folders(tmp_path, monkeypatch):
    """A Gradio cache and a system temporary folder of the test's own."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    (tmp_path / "temp").mkdir()
    return tmp_path


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_one_thread_deletes_every_folder_when_its_time_comes(tmp_path):
    reaper = Reaper()
    threads = threading.active_count()
    soon = [tmp_path / f"soon-{index}" for index in range(50)]
    later = tmp_path / "later"
    for folder in [*soon, later]:
        folder.mkdir()
        (folder / "file.png").write_bytes(b"x")
    reaper.delete_later(later, 60)
    for index, folder in enumerate(soon):
        reaper.delete_later(folder, 0.1 + index / 500)
    assert threading.active_count() <= threads + 1  # not one timer thread per file
    assert wait_until(lambda: not any(folder.exists() for folder in soon))
    assert later.exists() and reaper.pending() == 1


def test_an_image_is_written_into_gradios_cache_which_serves_it_without_a_copy(temp_folders):
    import gradio as gr

    path = Path(served_png(np.zeros((64, 64), np.uint8), "xray"))
    assert path.name == "xray.png" and path.parent.name.startswith(IMAGE_PREFIX)
    assert path.parent.parent == gradio_cache_folder() == (temp_folders / "gradio").resolve()
    assert gr.Image().move_resource_to_block_cache(str(path)) == str(path)
    assert not [other for other in gradio_cache_folder().rglob("*.png") if other != path]


def test_an_image_outlives_gradios_sweep_of_its_cache():
    """Gradio's sweep (which also drops the file from its own list) deletes an image first; its folder goes after."""
    frequency, age = CACHE_SWEEP_S
    assert IMAGE_LIFETIME_S > frequency + age
    assert REPORT_LIFETIME_S <= age


def test_a_report_nobody_fetches_is_deleted_and_leaves_the_list_when_its_time_comes(temp_folders):
    reports = OneTimeFiles(lifetime_s=0.2)
    paths = [reports.new_path("pneumo-report.pdf") for _ in range(3)]
    for path in paths:
        path.write_bytes(b"%PDF")
    assert len(reports) == 3 and all(str(path) in reports for path in paths)
    assert wait_until(lambda: not any(path.parent.exists() for path in paths))
    assert len(reports) == 0 and not any(str(path) in reports for path in paths)


def test_a_downloaded_report_is_deleted_at_once(temp_folders):
    reports = OneTimeFiles()
    path = reports.new_path("pneumo-report.pdf")
    path.write_bytes(b"%PDF")
    assert path.parent.name.startswith(REPORT_PREFIX) and path.parent.parent == gradio_cache_folder()
    reports.served(str(path))
    assert not path.parent.exists() and str(path) not in reports and len(reports) == 0


def aged(folder: Path, seconds: float) -> Path:
    """A folder holding one file, both last written `seconds` ago."""
    folder.mkdir(parents=True)
    return backdated(folder, seconds, write_file=True)


def backdated(path: Path, seconds: float, write_file: bool = False, content: bytes = b"x") -> Path:
    if write_file:
        backdated(path / "file", seconds, content=content)
    elif not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_folders_of_ours_that_an_earlier_run_left_are_deleted_at_start_once_older_than_their_lifetime(temp_folders):
    cache, temp = gradio_cache_folder(), temp_folders / "temp"
    stale = [aged(cache / f"{IMAGE_PREFIX}a1", IMAGE_LIFETIME_S + 60),
             aged(cache / f"{REPORT_PREFIX}b2", REPORT_LIFETIME_S + 60),
             aged(temp / f"{IMAGE_PREFIX}c3", IMAGE_LIFETIME_S + 60)]  # where pneumo 0.2 wrote its images
    kept = [aged(cache / f"{IMAGE_PREFIX}d4", 60),  # another running demo's, still in use
            aged(cache / f"{REPORT_PREFIX}e5", REPORT_LIFETIME_S - 60),
            aged(cache / "0123abcd", IMAGE_LIFETIME_S + 60),  # Gradio's own
            aged(temp / "someone-elses", IMAGE_LIFETIME_S + 60)]
    assert sorted(remove_leftovers()) == sorted(stale)
    assert not any(folder.exists() for folder in stale) and all(folder.exists() for folder in kept)


def test_at_start_gradios_uploads_and_empty_files_are_deleted_once_past_their_lifetime_and_nothing_else(
        temp_folders):
    cache, temp = gradio_cache_folder(), temp_folders / "temp"
    outside = aged(temp_folders / "elsewhere", UPLOAD_LIFETIME_S + 60)
    stale = [aged(cache / UPLOAD_FOLDER, UPLOAD_LIFETIME_S + 60),  # an upload Gradio's sweep would have deleted
             backdated(cache / "tmp0zu_rash", EMPTY_FILE_AGE_S + 60, content=b""),  # gr.File's empty file
             backdated(cache / "tmpa1b2c3d4", UPLOAD_LIFETIME_S + 60)]  # an upload cut off by the stop
    kept = [aged(cache / OTHER_UPLOAD_FOLDER, UPLOAD_LIFETIME_S - 60),  # a recent upload
            backdated(cache / "tmp14hhwiho", EMPTY_FILE_AGE_S - 30, content=b""),  # maybe an upload arriving
            backdated(cache / "tmp1ahjl1qj", UPLOAD_LIFETIME_S - 60),  # an upload arriving slowly
            backdated(cache / "notes.txt", UPLOAD_LIFETIME_S + 60, content=b""),  # not a name of Gradio's
            backdated(cache / "tmp_not_tempfiles", UPLOAD_LIFETIME_S + 60, content=b""),
            backdated(cache / ("f" * 64), UPLOAD_LIFETIME_S + 60),  # a file, not an upload's folder
            aged(temp / UPLOAD_FOLDER, UPLOAD_LIFETIME_S + 60),  # outside Gradio's cache
            backdated(temp / "tmp2b3c4d5e", UPLOAD_LIFETIME_S + 60, content=b"")]
    # An old folder holding a file Gradio handed out again (it touches it): in use.
    in_use = aged(cache / ("0" * 64), UPLOAD_LIFETIME_S + 60)
    (in_use / "file").touch()
    link = cache / ("1" * 64)
    link.symlink_to(outside, target_is_directory=True)
    then = time.time() - UPLOAD_LIFETIME_S - 60
    os.utime(link, (then, then), follow_symlinks=False)
    assert sorted(remove_leftovers()) == sorted(stale)
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in [*kept, in_use, link, outside / "file"])


def test_the_empty_files_gradio_leaves_at_the_top_of_its_cache_are_deleted_once_a_minute_old(temp_folders):
    cache = gradio_cache_folder()
    old = [backdated(cache / f"tmp{index:08d}", EMPTY_FILE_AGE_S + 5, content=b"") for index in range(3)]
    kept = [backdated(cache / "tmp99999999", EMPTY_FILE_AGE_S - 30, content=b""),  # maybe an upload arriving
            backdated(cache / "tmpabcdefgh", EMPTY_FILE_AGE_S + 5),  # bytes: an upload arriving
            backdated(cache / UPLOAD_FOLDER / "tmp12345678", EMPTY_FILE_AGE_S + 5, content=b"")]  # not at the top
    assert sorted(remove_empty_files()) == sorted(old)
    assert not any(path.exists() for path in old) and all(path.exists() for path in kept)


def test_the_reaper_repeats_a_task_once_per_task_and_survives_its_failures(tmp_path, caplog):
    reaper = Reaper()
    runs = []

    def tidy():
        runs.append("tidy")

    def failing():
        runs.append("failing")
        raise OSError("a clean-up that fails")

    reaper.every(0.05, tidy)
    reaper.every(0.05, failing)
    reaper.every(0.05, failing)  # already repeated: no second schedule
    folder = tmp_path / "soon"
    folder.mkdir()
    reaper.delete_later(folder, 0.2)
    try:
        assert wait_until(lambda: runs.count("tidy") >= 3 and runs.count("failing") >= 3 and not folder.exists())
        assert runs.count("failing") <= runs.count("tidy") + 1  # one thread, one schedule each
        assert reaper.pending() == 0  # repeated tasks are not folders waiting
        assert "a clean-up of the served files failed" in caplog.text  # logged, with its traceback
    finally:
        reaper.stop_repeating(tidy)
        reaper.stop_repeating(failing)


def test_when_the_demo_stops_every_folder_of_ours_and_every_empty_file_of_gradios_goes(temp_folders):
    cache = gradio_cache_folder()
    served = [Path(served_png(np.zeros((8, 8), np.uint8), f"heatmap-{index}")).parent for index in range(3)]
    report = OneTimeFiles().new_path("pneumo-report.pdf")
    report.write_bytes(b"%PDF")
    empty = backdated(cache / "tmp0zu_rash", 0, content=b"")  # just made: no upload arrives at a closed server
    emptied = cache / UPLOAD_FOLDER  # Gradio's shutdown deleted the upload in it
    emptied.mkdir()
    kept = aged(cache / OTHER_UPLOAD_FOLDER, 60)  # a file Gradio did not delete is not ours
    deleted = clean_up_at_stop()
    assert {*served, report.parent, empty, emptied} <= set(deleted)
    assert not any(path.exists() for path in [*served, report.parent, empty, emptied])
    assert kept.exists() and served_files.REAPER.pending() == 0


def test_the_demo_removes_leftovers_before_it_serves_and_what_it_served_once_stopped(monkeypatch):
    import app

    calls = []

    class RecordingReaper:
        def every(self, seconds, task):
            calls.append(f"every {seconds:g} s: {task.__name__}")

    class Demo:
        is_running = False

        def launch(self, **options):  # returns once the demo is stopped (Ctrl+C, SIGTERM)
            calls.append("launch")
            assert signal.getsignal(signal.SIGTERM) is not before  # SIGTERM stops the demo

        def close(self):
            calls.append("close")

    monkeypatch.setattr(app, "remove_leftovers", lambda: calls.append("remove_leftovers"))
    monkeypatch.setattr(app, "clean_up_at_stop", lambda: calls.append("clean_up_at_stop"))
    monkeypatch.setattr(app, "REAPER", RecordingReaper())
    before = signal.getsignal(signal.SIGTERM)
    app.launch(Demo())
    assert calls == ["remove_leftovers", f"every {EMPTY_FILE_AGE_S:g} s: remove_empty_files", "launch", "close",
                     "clean_up_at_stop"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_served_files_share_one_reaper(temp_folders):
    served_png(np.zeros((8, 8), np.uint8), "xray")  # starts the reaper's thread, unless an earlier test did
    threads, pending = threading.active_count(), served_files.REAPER.pending()
    for index in range(20):
        served_png(np.zeros((8, 8), np.uint8), f"heatmap-{index}")
    assert served_files.REAPER.pending() == pending + 20 and threading.active_count() == threads
