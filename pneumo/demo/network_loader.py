"""The demo's networks, loaded behind its page: the page serves as soon as each model's pneumo.json is read
(pneumo.hub.bundled.load_models with `defer_networks`), and a thread loads the networks one at a time, the default
pair first."""

from __future__ import annotations

import contextlib
import logging
import threading

from ..errors import PneumoError

STARTED_CHECK_S = 0.1
LOG = logging.getLogger(__name__)


def load_networks(predictors, traced=(), stop: threading.Event | None = None) -> None:
    """Load the predictors' deferred networks one at a time, those in `traced` first, each of these traced at once
    (its explained pass: seconds, which the first request would otherwise wait for). Until `stop` is set. One at a
    time: loading a network is mostly Python, and five loaded on five threads took as long as one after another. A
    network that fails to load is logged here, and the requests for that model say why."""
    predictors, traced = list(predictors), list(traced)
    for predictor in [*traced, *(predictor for predictor in predictors if predictor not in traced)]:
        if stop is not None and stop.is_set():
            return
        try:
            predictor.load_network()
            if predictor in traced:
                predictor.trace()
        except PneumoError as error:
            LOG.error("pneumo: %s", error)


@contextlib.contextmanager
def networks_loading(predictors, traced=(), start_when=lambda: True):
    """`load_networks` on a thread for the length of the `with` block, from when `start_when()` is true (checked
    every STARTED_CHECK_S: the demo serves its page first, which took 14 s instead of 8 with the loader beside it).
    On leaving the block, the network being loaded is finished (a thread stopped inside TensorFlow as the process
    ends can crash it) and no other is started."""
    stop = threading.Event()

    def load_once_started():
        while not start_when():
            if stop.wait(STARTED_CHECK_S):
                return
        load_networks(predictors, traced, stop)

    loader = threading.Thread(target=load_once_started, name="pneumo-network-loader", daemon=True)
    loader.start()
    try:
        yield loader
    finally:
        stop.set()
        loader.join()
