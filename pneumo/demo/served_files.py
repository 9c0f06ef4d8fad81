"""Files the demo hands to a browser or an API client, and when each is deleted.

Every file is written straight into Gradio's cache folder, in a new folder of its own whose name starts with
one of FOLDER_PREFIXES, so the file Gradio serves is that one: Gradio makes no copy of a file already in its
cache, and no second copy of an X-ray sits elsewhere.
- Images (heatmaps, the X-ray preview): Gradio's own sweep of its cache (CACHE_SWEEP_S, which app.py gives
  gr.Blocks as `delete_cache`, as for uploads) deletes them after an hour, and drops them from its own list of
  files. IMAGE_LIFETIME_S after it was made, past that sweep, the image's folder is deleted with whatever is left
  in it. Gradio rewrites an array's cache file in place, which truncated downloads when many clients sent the
  same image at once: hence files, each in a new folder, never arrays.
- A PDF report, which prints what a person typed, is deleted as soon as it has been downloaded once
  (DeleteOnceServed), or REPORT_LIFETIME_S after it was made if nobody fetches it.
One thread deletes every folder when it falls due (`Reaper`), and every minute the empty files Gradio leaves at
the top of its cache (`remove_empty_files`).
When the demo stops, what it served goes with it (`clean_up_at_stop`). What a run left that was stopped without
that (killed) is deleted when the next one starts (`remove_leftovers`), once older than its lifetime: our
folders, Gradio's empty files, and Gradio's uploads in its cache.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CACHE_SWEEP_S = (600, 3600)  # Gradio's sweep: every 10 minutes, the files it serves that are older than an hour
IMAGE_LIFETIME_S = float(sum(CACHE_SWEEP_S) + 600)  # past the sweep that deletes the image itself
REPORT_LIFETIME_S = 600.0
IMAGE_PREFIX, REPORT_PREFIX = "pneumo-served-", "pneumo-report-"
FOLDER_PREFIXES = {IMAGE_PREFIX: IMAGE_LIFETIME_S, REPORT_PREFIX: REPORT_LIFETIME_S}
FILE_ROUTE = "/file="  # Gradio's download route: GET <root>/gradio_api/file=<absolute path>
# Gradio's own names at the top of its cache: a folder per file it keeps (an upload, or its copy of an example),
# named by the SHA-256 of the content, and tempfile's names ("tmp" + 8 characters) for an upload being received
# and for the empty file gr.File(type="filepath") leaves on every call (remove_empty_files).
GRADIO_FOLDER_NAME = re.compile(r"[0-9a-f]{64}")
GRADIO_TEMP_FILE_NAME = re.compile(r"tmp[a-z0-9_]{8}")
UPLOAD_LIFETIME_S = float(CACHE_SWEEP_S[1])  # Gradio's sweep deletes an upload an hour after it came
EMPTY_FILE_AGE_S = 60.0  # an empty file untouched this long is no upload being received
# Heatmaps go to the page as JPEG: about 1 ms to encode a 448 px overlay where a PNG took 65 ms on the 2-core
# demo, at a fifth of the size; colour at full resolution, a pixel 0.7 levels of 255 off on average (99% within 3).
HEATMAP_JPEG_QUALITY = 90
LOG = logging.getLogger(__name__)


def gradio_cache_folder() -> Path:
    """Where Gradio keeps the files it serves (its GRADIO_TEMP_DIR, else <temp>/gradio)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


@dataclass(frozen=True)
class Repeated:
    """A task the reaper runs every `seconds`."""
    task: Callable[[], object]
    seconds: float


class Reaper:
    """One daemon thread that deletes folders when they fall due, for every file served, and runs the clean-ups
    repeated on a schedule: a queue of deadlines, not a timer thread per file."""

    def __init__(self):
        # A heap of (time.monotonic() deadline, order, a folder to delete or a Repeated task to run).
        self._due: list[tuple[float, int, Path | Repeated]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._repeated: set[Callable] = set()

    def delete_later(self, folder: Path, seconds: float) -> None:
        self._schedule(Path(folder), seconds)

    def every(self, seconds: float, task: Callable[[], object]) -> None:
        """Run `task` every `seconds`, from `seconds` on; once per task (a second call for it changes nothing)."""
        with self._changed:
            if task in self._repeated:
                return
            self._repeated.add(task)
        self._schedule(Repeated(task, seconds), seconds)

    def stop_repeating(self, task: Callable[[], object]) -> None:
        with self._changed:
            self._repeated.discard(task)

    def pending(self) -> int:
        """How many folders wait for their time."""
        with self._changed:
            return sum(isinstance(job, Path) for _, _, job in self._due)

    def delete_all_now(self) -> list[Path]:
        """Delete every folder waiting for its time (the demo stops: nobody will fetch its files). Returns them."""
        with self._changed:
            folders = [job for _, _, job in self._due if isinstance(job, Path)]
            self._due = [entry for entry in self._due if not isinstance(entry[2], Path)]
            heapq.heapify(self._due)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        return folders

    def _schedule(self, job: Path | Repeated, seconds: float) -> None:
        with self._changed:
            heapq.heappush(self._due, (time.monotonic() + seconds, next(self._order), job))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pneumo-reaper", daemon=True)
                self._thread.start()
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._changed.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, job = heapq.heappop(self._due)
            if isinstance(job, Path):
                shutil.rmtree(job, ignore_errors=True)
                continue
            with self._changed:
                if job.task not in self._repeated:  # stopped
                    continue
            try:
                job.task()
            except Exception:  # a bug in a task must not stop the thread that deletes every served file
                LOG.exception("pneumo: a clean-up of the served files failed")
            self._schedule(job, job.seconds)


REAPER = Reaper()


def short_lived_folder(prefix: str = IMAGE_PREFIX, lifetime_s: float = IMAGE_LIFETIME_S) -> Path:
    """A new folder in Gradio's cache, deleted with what it holds `lifetime_s` after creation."""
    parent = gradio_cache_folder()
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    REAPER.delete_later(folder, lifetime_s)
    return folder


def served_png(image: np.ndarray, name: str) -> str:
    """An image as a PNG file for Gradio to serve (see the module's note on arrays): lossless, for the X-ray."""
    path = short_lived_folder() / f"{name}.png"
    Image.fromarray(image).save(path)
    return str(path)


def served_jpeg(image: np.ndarray, name: str, quality: int = HEATMAP_JPEG_QUALITY) -> str:
    """An image as a JPEG file for Gradio to serve, without chroma subsampling: the heatmaps (HEATMAP_JPEG_QUALITY)."""
    path = short_lived_folder() / f"{name}.jpeg"
    Image.fromarray(image).save(path, format="JPEG", quality=quality, subsampling=0)
    return str(path)


def seconds_since_last_change(path: Path) -> float:
    """Seconds since `path` was last written; for a folder, since the newest write to anything in it (a file
    moved in, or a cached file Gradio hands out again: it touches it)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for folder, _, names in os.walk(path):
            for name in [".", *names]:
                try:
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
                except OSError:  # gone meanwhile
                    continue
    return time.time() - newest


def gradio_temp_files(min_age_s: float, empty: bool) -> list[Path]:
    """Gradio's tempfile-named files at the top of its cache, empty or not, unchanged for `min_age_s`."""
    found = []
    for path in gradio_cache_folder().glob("tmp*"):
        try:
            if (GRADIO_TEMP_FILE_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink()
                    and (path.stat().st_size == 0) == empty and seconds_since_last_change(path) > min_age_s):
                found.append(path)
        except OSError:  # gone meanwhile
            continue
    return found


def remove_empty_files(min_age_s: float = EMPTY_FILE_AGE_S) -> list[Path]:
    """Delete the empty files at the top of Gradio's cache unchanged for `min_age_s`. Returns them.

    Gradio 6's gr.File(type="filepath") makes one on every call (tempfile.NamedTemporaryFile(delete=False) in its
    _process_single_file, whose name it then overwrites, so its own sweep never hears of it), and app.py's upload
    feeds every endpoint and the preview. Sweeping them here rather than overriding that private method keeps
    Gradio's own checks of an upload, survives a Gradio that renames the method, and takes the same files of any
    other component and of a run that was killed. An upload being received is a tempfile-named file there too,
    but it holds bytes as soon as its content starts to arrive, right after the part's headers: an empty one
    unchanged for a minute is none. Hence EMPTY_FILE_AGE_S, and only empty files."""
    return delete_files(gradio_temp_files(min_age_s, empty=True))


def delete_files(paths) -> list[Path]:
    """Delete the files; returns those deleted (one gone meanwhile, or not ours to delete, is passed over)."""
    deleted = []
    for path in paths:
        try:
            path.unlink()
            deleted.append(path)
        except OSError:
            pass
    return deleted


def remove_leftovers() -> list[Path]:
    """Delete what an earlier run of the process left when it was stopped without its clean-up (killed), once
    older than its lifetime: the folders of ours (FOLDER_PREFIXES) in Gradio's cache and in the system's temporary
    folder (where pneumo 0.2 wrote its images); in Gradio's cache, its empty files (remove_empty_files), the
    uploads it was receiving (tempfile-named files with bytes) and its folders of uploads and copies (named by a
    SHA-256) unchanged for an hour, when its sweep would have deleted them. Nothing else, nowhere else. Returns
    what was deleted."""
    cache = gradio_cache_folder()
    deleted = []
    for parent in dict.fromkeys([cache, Path(tempfile.gettempdir()).resolve()]):
        for prefix, lifetime in FOLDER_PREFIXES.items():
            deleted += remove_old_folders(parent.glob(f"{prefix}*"), lifetime)
    deleted += remove_old_folders((folder for folder in cache.glob("*") if GRADIO_FOLDER_NAME.fullmatch(folder.name)),
                                  UPLOAD_LIFETIME_S)
    deleted += delete_files(gradio_temp_files(UPLOAD_LIFETIME_S, empty=False))  # uploads cut off by the stop
    return deleted + remove_empty_files()


def remove_old_folders(folders, lifetime_s: float) -> list[Path]:
    """Delete the folders (never a link to one) in which nothing changed for `lifetime_s`. Returns them."""
    deleted = []
    for folder in folders:
        try:
            old = folder.is_dir() and not folder.is_symlink() and seconds_since_last_change(folder) > lifetime_s
        except OSError:  # gone meanwhile
            continue
        if old:
            shutil.rmtree(folder, ignore_errors=True)
            deleted.append(folder)
    return deleted


def clean_up_at_stop() -> list[Path]:
    """Once the demo is closed (Gradio has deleted the files it kept: uploads, copies of examples): delete every
    folder of ours still waiting for its time, Gradio's empty files whatever their age (no upload is being
    received by a closed server), and the folders Gradio's own clean-up left empty. Returns what was deleted."""
    deleted = REAPER.delete_all_now() + remove_empty_files(min_age_s=0)
    for folder in gradio_cache_folder().glob("*"):
        if GRADIO_FOLDER_NAME.fullmatch(folder.name) and folder.is_dir() and not folder.is_symlink():
            try:
                folder.rmdir()  # only when empty
                deleted.append(folder)
            except OSError:  # not empty (a file Gradio did not delete: not ours), or gone
                pass
    return deleted


class OneTimeFiles:
    """Paths of files to delete after their first complete download. An entry leaves with its file: when it is
    downloaded, or when its folder's time has come, so the list holds at most the reports of the last
    REPORT_LIFETIME_S."""

    def __init__(self, lifetime_s: float = REPORT_LIFETIME_S):
        self.lifetime_s = lifetime_s
        self._folders: OrderedDict[str, tuple[Path, float]] = OrderedDict()  # path -> (folder, deadline), oldest first
        self._lock = threading.Lock()

    def new_path(self, name: str) -> Path:
        """A path for a new file inside Gradio's cache, in a folder of its own deleted after its first download
        or `lifetime_s`, whichever comes first."""
        folder = short_lived_folder(REPORT_PREFIX, self.lifetime_s)
        path = folder / name
        with self._lock:
            self._forget_expired()
            self._folders[str(path)] = (folder, time.monotonic() + self.lifetime_s)
        return path

    def served(self, path: str) -> None:
        with self._lock:
            entry = self._folders.pop(str(Path(path).resolve()), None) or self._folders.pop(path, None)
        if entry is not None:
            shutil.rmtree(entry[0], ignore_errors=True)

    def __contains__(self, path: str) -> bool:
        with self._lock:
            self._forget_expired()
            return path in self._folders or str(Path(path).resolve()) in self._folders

    def __len__(self) -> int:
        with self._lock:
            self._forget_expired()
            return len(self._folders)

    def _forget_expired(self) -> None:
        """Drop the entries whose folder the reaper has deleted (deadlines come in order: one lifetime for all)."""
        now = time.monotonic()
        while self._folders and next(iter(self._folders.values()))[1] <= now:
            self._folders.popitem(last=False)


class DeleteOnceServed:
    """ASGI middleware: a file of `files` is deleted once a GET has sent all of it with status 200."""

    def __init__(self, app, files: OneTimeFiles):
        self.app = app
        self.files = files

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") != "GET" or FILE_ROUTE not in path:
            return await self.app(scope, receive, send)
        served = path.split(FILE_ROUTE, 1)[1]
        if served not in self.files:
            return await self.app(scope, receive, send)
        status, complete = None, False

        async def watching_send(message):
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        await self.app(scope, receive, watching_send)
        if status == 200 and complete:
            self.files.served(served)
