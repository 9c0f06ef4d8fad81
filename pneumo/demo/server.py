"""What serving the demo on a small machine needs beyond Gradio's defaults: glibc's malloc arenas capped, Gradio's
idle queue polled less often, SIGTERM stopping the page as Ctrl+C does, and a probe of the share service."""

from __future__ import annotations

import ctypes
import os

import gradio as gr

# Gradio's queue looks for work every millisecond while it has none or its workers are busy (Queue.sleep_when_free;
# no public setting): 9% of a core on an idle demo, and a warm /compare 18-45 ms slower and 5-15% dearer in CPU on
# 2 cores than when it looks every 10 ms, which delays a request's start by 5 ms on average.
QUEUE_POLL_S = 0.01
SHARE_SERVICE_HOST = "api.gradio.app"
# glibc gives each thread serving requests a malloc arena of its own, and keeps their freed memory: the demo's
# resident memory grew 9.2% over 400 soak calls (benchmarks/soak.py), and stayed flat with two arenas.
MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # mallopt's parameter for it (glibc's malloc.h)


def poll_queue_less_often(demo: gr.Blocks) -> None:
    demo._queue.sleep_when_free = QUEUE_POLL_S


def stop_on_sigterm(demo: gr.Blocks):
    """A SIGTERM handler (docker stop, a Space restarting, `kill`) that stops the demo as Ctrl+C does: the server
    is closed, launch() returns and cleans up, and the process exits 0. Without it the process died at once,
    leaving every upload and heatmap behind."""
    def stop(signum, frame):
        if demo.is_running:
            demo.close()  # launch() stops waiting and returns
        else:  # still starting
            raise SystemExit(0)
    return stop


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at `arenas`, as the Dockerfile's MALLOC_ARENA_MAX does where the environment is
    not ours (a Space, `python app.py`). Called before the models load and the server starts its threads, while
    the process has its first two arenas: glibc fixes its limit once it has more than eight. Returns whether it
    was set: not without glibc (a no-op there), nor over a MALLOC_ARENA_MAX the environment sets."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # no confstr, or no such name: not glibc
        glibc = None
    if not glibc:
        return False
    return ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas) == 1


def share_service_reachable(timeout_s: float = 3.0) -> bool:
    """Whether Gradio's share service answers; without internet, --share falls back to local serving."""
    import socket

    try:
        socket.create_connection((SHARE_SERVICE_HOST, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False
