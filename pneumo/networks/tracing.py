"""A network's pass as one TensorFlow graph, traced once on first use."""

from __future__ import annotations

import threading


class TracedOnce:
    """`function` traced into one graph for inputs of `input_specs` (tf.TensorSpec) at its first call, behind a lock:
    concurrent first calls wait for that one trace, and no call traces again.

    A tf.function would trace once too, but TensorFlow counts traces by the Python code behind a function, not by
    the function: every model loaded builds its own pass from the same code, and from the fifth model on,
    TensorFlow logs "triggered tf.function retracing" for what is one trace each. The graph is called directly
    (a concrete function), which that count never sees.
    """

    def __init__(self, function, *input_specs):
        self._function, self._input_specs = function, input_specs
        self._graph = None
        self._lock = threading.Lock()

    def __call__(self, *inputs):
        if self._graph is None:
            with self._lock:
                if self._graph is None:
                    import tensorflow as tf

                    self._graph = tf.function(self._function).get_concrete_function(*self._input_specs)
        return self._graph(*inputs)
