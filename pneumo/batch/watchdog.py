"""Stop a batch run that makes no progress, rather than let it hang: say which stage stalled and what to check.

A run goes through stages: listing the files (here), reading and decoding them, scoring them. Each stage reports
its progress (`Watchdog.advance`); the Ray engine's workers report theirs to an actor that the watchdog polls.
When no stage has moved for `stall_s` seconds, the stalled stage is the one that has waited longest among those
not yet done (while scoring waits for reading, reading went on longest, and the other way round).

The watchdog stops the run by sending SIGINT to the main thread, as Ctrl-C would, which wakes it from a blocking
wait. For the length of the run, SIGINT is handled here (whatever handler a library had set, such as a web
server's that only asks it to stop): the stall becomes a RunStalledError, and a real Ctrl-C a KeyboardInterrupt.
The batches already scored stay on disk, for --resume. Code blocked where the signal cannot reach it (inside a C
call) is ended, with the same message, after `GRACE_S`, when `hard_exit` allows it (batch_eval.py does; a
library caller's process is never ended), as is a run watched from another thread, which no signal reaches.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from ..errors import RunStalledError

DEFAULT_STALL_S = 300.0
GRACE_S = 30.0
STALLED_EXIT_STATUS = 3  # batch_eval.py's exit status for a run the watchdog stopped

# What each stage is, and what to check when it stalls.
STAGES = {
    "listing": ("listing the files", "that the folder or bucket answers from this machine (for object storage, the "
                                     "endpoint, region and credentials set here)"),
    "reserving": ("reserving room for the model replicas", "that the cluster's nodes are alive and have a CPU "
                                                           "and the memory for a replica free"),
    "reading": ("reading and decoding the files", "that every node reaches the folder or bucket (the same path on "
                                                  "every node; for object storage docs/scale-out.md) and has a CPU "
                                                  "free"),
    "scoring": ("scoring", "that every node can load the model and has the memory for it"),
}


class Watchdog:
    """Watches a run (a `with` block) for progress. `poll`, if given, is called from the watchdog's thread every
    `interval_s` and returns {stage: (steps, files)} counted elsewhere (by Ray's workers) since the stages began:
    a step more is progress. `what` names the run in the message."""

    def __init__(self, stall_s: float | None, what: str, *, poll=None, hard_exit: bool = False,
                 interval_s: float | None = None):
        self.stall_s = stall_s if stall_s and stall_s > 0 else None
        self.what, self.poll, self.hard_exit = what, poll, hard_exit
        self.interval_s = interval_s or (min(5.0, self.stall_s / 10) if self.stall_s else 5.0)
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}  # stage in play -> when it last moved
        self.remaining: dict[str, int | None] = {}  # files it has still to do (None: not counted)
        self.polled: dict[str, tuple[int, int]] = {}
        self.message: str | None = None
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.previous_handler = None  # SIGINT's handler before the run, when the run is in the main thread

    def begin(self, **stages: int | None) -> None:
        """The stages now in play, each with the number of files it has to do (None: one step, such as
        listing); what was in play before is done."""
        now = time.monotonic()
        with self.lock:
            self.last = {stage: now for stage in stages}
            self.remaining = dict(stages)
            self.polled = {}

    def advance(self, stage: str, files: int = 0) -> None:
        """`stage` moved (and did `files` more files)."""
        with self.lock:
            if stage in self.last:
                self.last[stage] = time.monotonic()
                if self.remaining.get(stage) is not None:
                    self.remaining[stage] -= files

    def stalled_stage(self, now: float) -> str | None:
        """The stage to blame when nothing has moved for stall_s, else None."""
        with self.lock:
            waiting = {stage: last for stage, last in self.last.items()
                       if self.remaining.get(stage) is None or self.remaining[stage] > 0}
            if not waiting or now - max(self.last.values()) < self.stall_s:
                return None
            return min(waiting, key=lambda stage: (waiting[stage], list(STAGES).index(stage)))

    def stall_message(self, stage: str) -> str:
        doing, check = STAGES[stage]
        return (f"{self.what}: stopped, no progress for {self.stall_s:g} s while {doing}; check {check}. What was "
                "scored is kept: run the same command with --resume to go on (--stall-timeout sets the wait)")

    def watch(self) -> None:
        while not self.stopped.wait(self.interval_s):
            if self.poll is not None:
                self.take_polled()
            stage = self.stalled_stage(time.monotonic())
            if stage is None:
                continue
            self.message = self.stall_message(stage)
            if self.previous_handler is not None:
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            if self.hard_exit and not self.stopped.wait(GRACE_S):
                print(f"\nbatch_eval.py: {self.message}", file=sys.stderr, flush=True)
                os._exit(STALLED_EXIT_STATUS)
            return

    def take_polled(self) -> None:
        try:
            counts = self.poll()
        except Exception:  # a poll that fails (a busy cluster) is no progress, and no reason to stop watching
            return
        for stage, (steps, files) in counts.items():
            steps_before, files_before = self.polled.get(stage, (0, 0))
            if steps > steps_before:
                self.polled[stage] = (steps, files)
                self.advance(stage, files - files_before)

    def on_interrupt(self, signal_number, frame) -> None:
        raise Stalled() if self.message is not None else KeyboardInterrupt()

    def __enter__(self) -> Watchdog:
        if self.stall_s:
            if threading.current_thread() is threading.main_thread():
                self.previous_handler = signal.signal(signal.SIGINT, self.on_interrupt)
            self.thread = threading.Thread(target=self.watch, name="pneumo-watchdog", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()
        if self.previous_handler is not None:
            signal.signal(signal.SIGINT, self.previous_handler)
        if self.message is not None and (kind is None or issubclass(kind, (Stalled, Exception))):
            raise RunStalledError(self.message) from None


class Stalled(BaseException):
    """Raised in the main thread when its run stalled; a BaseException, as KeyboardInterrupt is, so that no
    `except Exception` on the way takes it for an error of its own."""
