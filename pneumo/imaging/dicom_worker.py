"""Compressed DICOM pixel data, decoded in a worker process.

GDCM, which decodes JPEG Lossless, JPEG-LS, JPEG 2000 and JPEG baseline DICOM here, ends the whole process
(C++ std::terminate) on some malformed files instead of raising an error: a header whose bit depth or number of
samples disagrees with the codestream, for one. tests/fuzzing.py finds such files in a few thousand mutations of
real ones. In the demo's process one such upload would end the demo for everyone, and in a batch run the run.
So the first frame of compressed pixel data is decoded by a worker process, started on first use and kept, with
its address space capped (WORKER_ADDRESS_SPACE_BYTES): when it dies or takes longer than WORKER_TIMEOUT_S, the
file gets `DecoderCrashed` and the next one a new worker. Decodes are one at a time per process that asks.

The worker runs this file as a script: it imports numpy and pydicom, not pneumo, so it starts in under a second.
A decoder's own exception comes back as the same built-in type (NotImplementedError, ValueError, MemoryError...)
with its message, or as `DecoderError` for any other type.
"""

from __future__ import annotations

import io
import os
import select
import struct
import subprocess
import sys
import threading
import time

WORKER_ADDRESS_SPACE_BYTES = 4 * 2**30  # a 50-megapixel RGB frame and its codec's buffers fit well within it
WORKER_TIMEOUT_S = 120.0
_LENGTH = struct.Struct(">Q")
_ARRAY, _ERROR = b"A", b"E"
_BUILT_IN_ERRORS = {error.__name__: error for error in (NotImplementedError, RuntimeError, ValueError, TypeError,
                                                         KeyError, IndexError, AttributeError, EOFError, OSError,
                                                         MemoryError)}


class DecoderCrashed(Exception):
    """The worker process ended, or ran out of time, while it decoded this file (the message says which, as the
    end of a sentence whose subject is the decoder: "ended with exit status -6")."""


class DecoderError(Exception):
    """The decoder raised an exception of a type that is not built in (its name starts the message)."""


class _Worker:
    def __init__(self):
        # One thread for the linear algebra libraries: their per-thread buffers would count against the cap.
        environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        # Its stderr is dropped: codecs print a line there for each damaged file ("Corrupt JPEG data: ..."),
        # which would fill a batch run's log; the error that matters comes back with the file.
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=environment)

    def decode(self, data: bytes):
        import numpy as np

        deadline = time.monotonic() + WORKER_TIMEOUT_S
        try:
            self.process.stdin.write(_LENGTH.pack(len(data)))
            self.process.stdin.write(data)
            self.process.stdin.flush()
            kind = self._read(1, deadline)
            payload = self._read(_LENGTH.unpack(self._read(_LENGTH.size, deadline))[0], deadline)
        except (OSError, EOFError, TimeoutError) as error:
            self.stop()
            raise DecoderCrashed(str(error) or f"failed ({type(error).__name__})") from None
        except BaseException:  # interrupted halfway through the exchange: its answer must not go to the next file
            self.stop()
            raise
        if kind == _ARRAY:
            return np.load(io.BytesIO(payload), allow_pickle=False)
        name, _, message = payload.decode("utf-8", "replace").partition("\n")
        raise _BUILT_IN_ERRORS[name](message) if name in _BUILT_IN_ERRORS else DecoderError(f"{name}: {message}")

    def _read(self, count: int, deadline: float) -> bytes:
        chunks, descriptor = [], self.process.stdout.fileno()
        while count:
            if not select.select([descriptor], [], [], max(deadline - time.monotonic(), 0))[0]:
                raise TimeoutError(f"gave no answer within {WORKER_TIMEOUT_S:.0f} s")
            chunk = os.read(descriptor, min(count, 1 << 20))
            if not chunk:
                raise EOFError(f"ended with exit status {self.process.wait()}")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:  # what was left to send to the ended process
                pass


_worker: _Worker | None = None
_lock = threading.Lock()


def first_frame(data: bytes):
    """pydicom's first frame (`pixel_array(..., index=0)`) of the DICOM file `data`, decoded in the worker."""
    global _worker
    with _lock:
        if _worker is None or _worker.process.poll() is not None:
            _worker = _Worker()
        worker = _worker
        try:
            return worker.decode(data)
        except DecoderCrashed:
            _worker = None
            raise


def stop_worker() -> None:
    """End the worker, if one runs (a new one starts with the next file)."""
    global _worker
    with _lock:
        if _worker is not None:
            _worker.stop()
            _worker = None


def _serve() -> None:
    """The worker: read a length-prefixed file from stdin, answer with its first frame (as .npy) or the error."""
    import resource

    import numpy as np
    from pydicom.pixels import pixel_array

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_ADDRESS_SPACE_BYTES, WORKER_ADDRESS_SPACE_BYTES))
    # Answers go to a private copy of stdout; what a library prints to stdout goes to stderr instead.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    while header := requests.read(_LENGTH.size):
        data = requests.read(_LENGTH.unpack(header)[0])
        try:
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(pixel_array(io.BytesIO(data), index=0)), allow_pickle=False)
            kind, payload = _ARRAY, buffer.getvalue()
        except Exception as error:  # noqa: BLE001  (every failure goes back to the caller)
            kind, payload = _ERROR, f"{type(error).__name__}\n{error}".encode("utf-8", "replace")
        answers.write(kind + _LENGTH.pack(len(payload)) + payload)
        answers.flush()


if __name__ == "__main__":
    _serve()
