"""Files the demo hands to a browser or an API client, kept no longer than it takes to fetch them.

Gradio serves a returned file from its cache folder, and copies it there first unless it already is inside.
- Images (heatmaps, the X-ray preview) are written to a short-lived folder of their own, deleted
  IMAGE_LIFETIME_S later: Gradio has copied them by then (its copy goes with its delete_cache sweep).
  Gradio copies files atomically, while it rewrites an array's cache file in place, which truncated
  downloads when many clients sent the same image at once: hence files, not arrays.
- A PDF report, which prints what a person typed, is written straight into Gradio's cache, so the copy
  served is the only one, and it is deleted as soon as it has been downloaded once (DeleteOnceServed),
  or REPORT_LIFETIME_S after it was made if nobody fetches it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_LIFETIME_S = 10.0
REPORT_LIFETIME_S = 600.0
FILE_ROUTE = "/file="  # Gradio's download route: GET <root>/gradio_api/file=<absolute path>


def gradio_cache_folder() -> Path:
    """Where Gradio keeps the files it serves (its GRADIO_TEMP_DIR, else <temp>/gradio)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def _delete_later(folder: Path, seconds: float) -> None:
    timer = threading.Timer(seconds, shutil.rmtree, args=(folder,), kwargs={"ignore_errors": True})
    timer.daemon = True
    timer.start()


def short_lived_folder(prefix: str = "pneumo-served-", parent=None, lifetime_s: float = IMAGE_LIFETIME_S) -> Path:
    """A new temporary folder, deleted with what it holds `lifetime_s` after creation."""
    if parent is not None:
        Path(parent).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    _delete_later(folder, lifetime_s)
    return folder


def served_png(image: np.ndarray, name: str) -> str:
    """An image as a PNG file for Gradio to serve (see the module's note on arrays)."""
    path = short_lived_folder() / f"{name}.png"
    Image.fromarray(image).save(path)
    return str(path)


class OneTimeFiles:
    """Paths of files to delete after their first complete download."""

    def __init__(self):
        self._folders: dict[str, Path] = {}
        self._lock = threading.Lock()

    def new_path(self, name: str) -> Path:
        """A path for a new file inside Gradio's cache, in a folder of its own deleted after its first download
        or REPORT_LIFETIME_S, whichever comes first."""
        folder = short_lived_folder("pneumo-report-", gradio_cache_folder(), REPORT_LIFETIME_S)
        path = folder / name
        with self._lock:
            self._folders[str(path)] = folder
        return path

    def served(self, path: str) -> None:
        with self._lock:
            folder = self._folders.pop(str(Path(path).resolve()), None) or self._folders.pop(path, None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def __contains__(self, path: str) -> bool:
        with self._lock:
            return path in self._folders or str(Path(path).resolve()) in self._folders


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
