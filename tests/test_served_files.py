"""The files the demo serves: written into Gradio's cache (Gradio serves them as they are, with no copy of its
own), deleted by one thread when their time comes, a report's entry gone with its file, and the folders a
stopped run left behind deleted when the next one starts."""

import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pneumo import served_files
from pneumo.served_files import (
    CACHE_SWEEP_S,
    IMAGE_LIFETIME_S,
    IMAGE_PREFIX,
    REPORT_LIFETIME_S,
    REPORT_PREFIX,
    OneTimeFiles,
    Reaper,
    gradio_cache_folder,
    remove_leftovers,
    served_png,
)


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
    folder.mkdir(parents=True)
    (folder / "file").write_bytes(b"x")
    then = time.time() - seconds
    os.utime(folder, (then, then))
    return folder


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


def test_the_demo_removes_leftovers_before_it_serves(monkeypatch):
    import app

    calls = []
    monkeypatch.setattr(app, "remove_leftovers", lambda: calls.append("remove_leftovers"))

    class Demo:
        def launch(self, **options):
            calls.append("launch")

    app.launch(Demo())
    assert calls == ["remove_leftovers", "launch"]


def test_the_served_files_share_one_reaper(temp_folders):
    served_png(np.zeros((8, 8), np.uint8), "xray")  # starts the reaper's thread, unless an earlier test did
    threads, pending = threading.active_count(), served_files.REAPER.pending()
    for index in range(20):
        served_png(np.zeros((8, 8), np.uint8), f"heatmap-{index}")
    assert served_files.REAPER.pending() == pending + 20 and threading.active_count() == threads
