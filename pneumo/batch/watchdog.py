"""Stop a batch run that makes no progress, rather than let it hang: say which stage stalled and what to check.

A run goes through stages: listing the files (here), reading and decoding them, scoring them. Each stage reports
its progress (`Watchdog.advance`, or `Watchdog.working` around one piece of work); the Ray engine's workers report
theirs to an actor that the watchdog polls. When no stage has moved for `stall_s` seconds, the stalled stage is
the first one with work started and not finished (a read that never returns), else the one that has waited longest
among those not yet done (while scoring waits for reading, reading went on longest, and the other way round).

The watchdog stops the run by sending SIGINT to the main thread, as Ctrl-C would, which wakes it from a blocking
wait. For the length of the run, SIGINT is handled here: the stall becomes a RunStalledError, and a real Ctrl-C
goes to the handler there was before (a KeyboardInterrupt by default). The batches already scored stay on disk,
for --resume. Code blocked where the signal cannot reach it (inside a C call) is ended, with the same message,
after `GRACE_S`, when `hard_exit` allows it (batch_eval.py does; a library caller's process is never ended). A
run in another thread, which no signal reaches, is watched only with `hard_exit`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time

from ..errors import RunStalledError

DEFAULT_STALL_S = 300.0
GRACE_S = 30.0
STALLED_EXIT_STATUS = 3  # batch_eval.py's exit status for a run the watchdog stopped
LOG = logging.getLogger(__name__)

# What each stage is, and what to check when it stalls, in the order a run goes through them.
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


class Stalled(KeyboardInterrupt):
    """Raised in the main thread when its run stalled. A KeyboardInterrupt, so that nothing on the way takes it
    for an error of its own, and Ray passes it on from a wait as it passes Ctrl-C on."""


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
        self.in_flight: dict[str, int] = {}  # pieces of work started and not finished, by stage
        self.polled: dict[str, tuple[int, int]] = {}
        self.message: str | None = None  # set once the run is found stalled
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.interrupts = False  # whether SIGINT is handled here (the run is in the main thread)
        self.previous_handler = None

    def begin(self, **stages: int | None) -> None:
        """The stages now in play, each with the number of files it has to do (None: one step, such as
        listing); what was in play before is done."""
        now = time.monotonic()
        with self.lock:
            self.last = {stage: now for stage in stages}
            self.remaining = dict(stages)
            self.in_flight = {}
            self.polled = {}

    def advance(self, stage: str, files: int = 0) -> None:
        """`stage` moved (and did `files` more files)."""
        with self.lock:
            if stage in self.last:
                self.last[stage] = time.monotonic()
                if self.remaining.get(stage) is not None:
                    self.remaining[stage] -= files

    @contextlib.contextmanager
    def working(self, stage: str, files: int = 1):
        """One piece of `stage`'s work (a file read, a batch scored): started, then, when it ends, progress."""
        with self.lock:
            self.in_flight[stage] = self.in_flight.get(stage, 0) + 1
        try:
            yield
        finally:
            with self.lock:
                self.in_flight[stage] -= 1
            self.advance(stage, files)

    def stalled_stage(self, now: float) -> str | None:
        """The stage to blame when nothing has moved for stall_s, else None."""
        with self.lock:
            if not self.last or now - max(self.last.values()) < self.stall_s:
                return None
            started = [stage for stage in STAGES if self.in_flight.get(stage, 0) > 0 and stage in self.last]
            if started:
                return started[0]
            waiting = {stage: last for stage, last in self.last.items()
                       if self.remaining.get(stage) is None or self.remaining[stage] > 0}
            if not waiting:
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
            with self.lock:  # the run cannot leave its block between the finding and the signal (__exit__)
                if self.stopped.is_set():
                    return
                self.message = self.stall_message(stage)
                if self.interrupts:
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
            if steps != steps_before:  # more steps; fewer: the counter started again (an actor restarted)
                self.polled[stage] = (steps, files)
                self.advance(stage, max(files - files_before, 0))

    def on_interrupt(self, signal_number, frame) -> None:
        if self.message is not None:
            raise Stalled()
        if callable(self.previous_handler):  # a real Ctrl-C: what it did before the run
            return self.previous_handler(signal_number, frame)
        if self.previous_handler != signal.SIG_IGN:
            raise KeyboardInterrupt()

    def __enter__(self) -> Watchdog:
        if not self.stall_s:
            return self
        self.interrupts = threading.current_thread() is threading.main_thread()
        if not (self.interrupts or self.hard_exit):
            LOG.warning("%s: not watched for stalls (run outside the main thread, which no signal reaches)",
                        self.what)
            return self
        if self.interrupts:
            self.previous_handler = signal.signal(signal.SIGINT, self.on_interrupt)
        self.thread = threading.Thread(target=self.watch, name="pneumo-watchdog", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        with self.lock:
            self.stopped.set()
            fired = self.message is not None
        try:
            if self.thread is not None:
                self.thread.join()
            if fired and self.interrupts:
                time.sleep(0.05)  # a signal sent as the run ended is taken here, not after the block
        except Stalled:
            pass
        finally:
            if self.interrupts:
                signal.signal(signal.SIGINT, self.previous_handler if self.previous_handler is not None
                              else signal.default_int_handler)
        if fired and kind is not None:
            raise RunStalledError(self.message) from None
