"""Files written whole or not at all: an interrupted run never leaves a half-written CSV, JSON or figure."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write(path, write) -> None:
    """Call `write(temporary_path)`, then move the finished file into place in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o644)  # mkstemp makes files only their owner can read; these are for everyone
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_text(path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path, payload) -> None:
    write_text(path, json.dumps(payload, indent=2) + "\n")


def write_csv(path, frame, index: bool = False, float_format: str | None = None) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=index, float_format=float_format))
