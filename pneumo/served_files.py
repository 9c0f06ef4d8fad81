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
One thread deletes every folder when it falls due (`Reaper`). Folders of ours that a run of the process left
behind (stopped before their time came) are deleted by the next one when it starts (`remove_leftovers`), once
they are older than their lifetime.
"""

from __future__ import annotations

import heapq
import itertools
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

CACHE_SWEEP_S = (600, 3600)  # Gradio's sweep: every 10 minutes, the files it serves that are older than an hour
IMAGE_LIFETIME_S = float(sum(CACHE_SWEEP_S) + 600)  # past the sweep that deletes the image itself
REPORT_LIFETIME_S = 600.0
IMAGE_PREFIX, REPORT_PREFIX = "pneumo-served-", "pneumo-report-"
FOLDER_PREFIXES = {IMAGE_PREFIX: IMAGE_LIFETIME_S, REPORT_PREFIX: REPORT_LIFETIME_S}
FILE_ROUTE = "/file="  # Gradio's download route: GET <root>/gradio_api/file=<absolute path>


def gradio_cache_folder() -> Path:
    """Where Gradio keeps the files it serves (its GRADIO_TEMP_DIR, else <temp>/gradio)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


class Reaper:
    """One daemon thread that deletes folders when they fall due, for every file served: a queue of deadlines,
    not a timer thread per file."""

    def __init__(self):
        self._due: list[tuple[float, int, Path]] = []  # a heap of (time.monotonic() deadline, order, folder)
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def delete_later(self, folder: Path, seconds: float) -> None:
        with self._changed:
            heapq.heappush(self._due, (time.monotonic() + seconds, next(self._order), Path(folder)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pneumo-reaper", daemon=True)
                self._thread.start()
            self._changed.notify()

    def pending(self) -> int:
        """How many folders wait for their time."""
        with self._changed:
            return len(self._due)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._changed.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, folder = heapq.heappop(self._due)
            shutil.rmtree(folder, ignore_errors=True)


REAPER = Reaper()


def short_lived_folder(prefix: str = IMAGE_PREFIX, lifetime_s: float = IMAGE_LIFETIME_S) -> Path:
    """A new folder in Gradio's cache, deleted with what it holds `lifetime_s` after creation."""
    parent = gradio_cache_folder()
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    REAPER.delete_later(folder, lifetime_s)
    return folder


def served_png(image: np.ndarray, name: str) -> str:
    """An image as a PNG file for Gradio to serve (see the module's note on arrays)."""
    path = short_lived_folder() / f"{name}.png"
    Image.fromarray(image).save(path)
    return str(path)


def remove_leftovers() -> list[Path]:
    """Delete the folders of ours (FOLDER_PREFIXES) older than their lifetime, in Gradio's cache and in the system's
    temporary folder (where pneumo 0.2 wrote its images): what an earlier run of the process left when it stopped
    before their time came. Returns the folders deleted."""
    deleted = []
    for parent in dict.fromkeys([gradio_cache_folder(), Path(tempfile.gettempdir()).resolve()]):
        for prefix, lifetime in FOLDER_PREFIXES.items():
            for folder in parent.glob(f"{prefix}*"):
                try:
                    old = folder.is_dir() and not folder.is_symlink() and time.time() - folder.stat().st_mtime > lifetime
                except OSError:  # gone meanwhile
                    continue
                if old:
                    shutil.rmtree(folder, ignore_errors=True)
                    deleted.append(folder)
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
