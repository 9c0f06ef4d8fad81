"""Score a folder with Ray Data: the batch engine for folders past one machine (a laptop needs no setup).

    list the files (here, as pneumo.batch.scoring.discover lists them) -> CPU tasks read their bytes and
    decode them through the one image path -> an actor pool scores them, each actor loading the model once
    -> per-file scores back here -> the local engine's tables and reports

Every task and every actor gets one "slot" of CPU (`scoring_plan`): a whole CPU, or half of the smallest node's
CPUs where a node has fewer than two. The actors' slots are a placement group's bundles, one per node with CPUs
(`reserve_replicas`), which also hold a replica restarted after its node is lost off the nodes that have one: the
actors never hold every CPU of a node, and reading and decoding always find one, whatever the cluster's shape (one
CPU per node, a head without CPUs) and whichever nodes are lost.

Scores reach `--out/.parts/` batch by batch as this process receives them, as the local engine writes them, so
that a run resumed (`resume`) scores only what an interrupted one had not received.

Local folders and object storage (s3://, gs://, file://) are listed here and read on the workers through
pyarrow's filesystems (`pneumo.batch.storage`, which also passes this machine's storage settings to the workers).
The files are listed once, here: Ray Data's own file readers would list them again, and for more than 16 files in
object storage they do it in tasks that each ask for a whole CPU, which a cluster of one-CPU nodes, half of each
held by a model replica, never has free (such a run waited for ever). On a cluster a local folder (and a local
model folder) must be at the same path on every node.

A run that makes no progress for `stall_s` seconds stops (`pneumo.batch.watchdog`): the workers count what they
read and score on a small actor (`ProgressCounts`) that the watchdog polls.

The predictions and skipped tables come from `pneumo.batch.scoring.predictions_and_skipped` and every report from
`pneumo.batch.scoring.write_reports`, so a run here writes what `pneumo.batch.scoring.run_folder` writes.

Ray is optional (requirements-ray.txt): it is imported only when this engine runs.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .scoring import (
    PART_COLUMNS,
    ScoreParts,
    ensemble_file_scores,
    nothing_to_score,
    predictions_and_skipped,
    run_settings,
    start_parts,
    unique_names,
    write_reports,
)
from .storage import is_uri, list_files, read_bytes, shown, worker_environment
from .watchdog import DEFAULT_STALL_S, Watchdog
from ..errors import (
    DataFolderError,
    HubUnavailableError,
    ImageTooLargeError,
    InvalidImageError,
    ModelLoadError,
    ModelNotFoundError,
    PneumoError,
    StorageReadError,
)
from ..imaging.decoding import check_file_size, load_model_input
from ..hub.loading import load_predictor

INSTALL_HINT = "pip install -r requirements-ray.txt"
LOG = logging.getLogger(__name__)
# Memory reserved for each model replica (an actor): TensorFlow and a bundled model take about 1 GB at batch
# 32, so a node is given no more replicas than it holds. Unlike the decoding tasks' resources, it also keeps
# Ray Data from fusing the decoding into the actors (each would then decode one file at a time), and it is what
# admits one replica per bundle of the placement group (`scoring_dataset`).
REPLICA_MEMORY = 2**30
# How long a run waits for room for its model replicas before planning them again from the nodes then alive: a
# node lost just before the run is still listed alive until Ray notices (some 15 s by default).
RESERVE_TIMEOUT_S = 60
RESERVE_ATTEMPTS = 3


# How long Ray Data keeps a run's share of the cluster reserved after the run last asked for it (180 s by default;
# a live run asks every 10 s). A run killed never gives its share back: on nodes of one or two CPUs, Ray Data then
# leaves the next run, the one that resumes it, no CPU to schedule by until the share expires (it crawls).
RESERVATION_EXPIRY_S = "30"


def import_ray():
    """The `ray` module with Ray Data, or a one-line error that says how to install it."""
    os.environ.setdefault("RAY_DATA_AUTOSCALING_REQUEST_EXPIRE_TIME_S", RESERVATION_EXPIRY_S)  # read on import
    try:
        import ray
        import ray.data  # the extra that requirements-ray.txt installs
    except ImportError:
        raise PneumoError(f"the Ray engine needs Ray Data, which is not installed: {INSTALL_HINT}") from None
    return ray


def start_ray(address: str | None = None) -> bool:
    """Join the Ray cluster at `address` (`auto`: the one `ray start` began on this machine), or without an
    address start Ray here on this machine's cores (never joining a cluster that an earlier `ray start` left
    recorded here). Returns whether this call started (and so should end) it.

    Workers import pneumo from this checkout: through PYTHONPATH on this machine, shipped with the job
    (`py_modules`) to a cluster, whose nodes need pneumo's own requirements installed. They get the storage
    settings set here that are not secrets (`pneumo.batch.storage.worker_environment`). A cluster that asks for
    token authentication takes Ray's own settings (`TOKEN_SETTINGS`); one this process cannot join is a
    one-line error.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    package = Path(__file__).resolve().parents[1]  # pneumo/
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    storage = worker_environment()
    if address:
        try:
            ray.init(address=address, runtime_env={"py_modules": [str(package)], "env_vars": storage}, **quiet)
        except (ConnectionError, ray.exceptions.AuthenticationError) as error:
            raise join_error(address, error) from None
    else:
        python_path = os.pathsep.join(filter(None, [str(package.parent), os.environ.get("PYTHONPATH")]))
        ray.init(address="local", include_dashboard=False,
                 runtime_env={"env_vars": {**storage, "PYTHONPATH": python_path}}, **quiet)
    return True


# What a driver joining a cluster with token authentication needs in Ray 2.60, which turns it on for a cluster
# that `ray start --head` begins where a token exists: Ray takes the token from the first of these places that
# holds one, but sends it to an address it is given only when RAY_AUTH_MODE says so.
TOKEN_SETTINGS = ("RAY_AUTH_MODE=token, with the cluster's token (`ray get-auth-token` on its head node) in "
                  "RAY_AUTH_TOKEN, in the file that RAY_AUTH_TOKEN_PATH names, or in ~/.ray/auth_token")


def join_error(address: str, error: Exception) -> PneumoError:
    """Why this process cannot join the Ray cluster at `address`, in one line: token authentication missing or
    refused (Ray passes the refusal on inside a ConnectionError's cause), or no cluster answering there."""
    ray = import_ray()
    causes = [error]
    while (cause := causes[-1].__cause__ or causes[-1].__context__) is not None and cause not in causes:
        causes.append(cause)
    if any(isinstance(cause, ray.exceptions.AuthenticationError) or "InvalidAuthToken" in str(cause)
           for cause in causes):
        mode = os.environ.get("RAY_AUTH_MODE") or "unset"
        return PneumoError(f"--ray-address {address}: the Ray cluster refused this driver (token authentication; "
                           f"RAY_AUTH_MODE is {mode}): set {TOKEN_SETTINGS}")
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return PneumoError(f"--ray-address {address}: cannot join a Ray cluster there ({first_line})")


def scoring_plan(nodes: list[dict], actors: int | None = None) -> tuple[int, float]:
    """(model replicas, CPUs that each task and each replica asks for) on a cluster whose `ray.nodes()` are
    `nodes`: one replica per live node with CPUs, or `actors` if fewer. The slot is a CPU, or half of the smallest
    node's CPUs where a node has fewer than two, so that a node holding a replica (one at most,
    `reserve_replicas`) can still read and decode."""
    cpus = [node["Resources"].get("CPU", 0) for node in nodes if node["Alive"]]
    cpus = [count for count in cpus if count > 0]
    if not cpus:
        raise PneumoError("the Ray cluster has no CPUs to read, decode and score on")
    return min(actors or len(cpus), len(cpus)), min(1.0, min(cpus) / 2)


class Replicas(NamedTuple):
    """Room held on the cluster for a run's model replicas (`reserve_replicas`)."""

    group: object  # Ray's placement group: a bundle per replica, each on a node of its own
    count: int
    slot: float  # CPUs that each replica, and each task that reads or decodes, asks for


def reserve_replicas(actors: int | None = None) -> Replicas:
    """Room for the model replicas of `scoring_plan`, each on a node of its own (a placement group, STRICT_SPREAD).
    Ray Data restarts a replica whose node is lost; held to the group, it waits for a node without one rather than
    doubling up on a node that has one, where it would take the slot that reading and decoding need there and the
    run would never end. A cluster without room for them is a one-line error."""
    from ray.util.placement_group import placement_group, remove_placement_group

    ray = import_ray()
    for _ in range(RESERVE_ATTEMPTS):
        count, slot = scoring_plan(ray.nodes(), actors)
        group = placement_group([{"CPU": slot, "memory": REPLICA_MEMORY}] * count, strategy="STRICT_SPREAD")
        try:
            ray.get(group.ready(), timeout=RESERVE_TIMEOUT_S)
            return Replicas(group, count, slot)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(group)
    raise PneumoError(f"the Ray cluster has no room for {count} model replicas, one per node ({slot:g} CPU and "
                      f"{REPLICA_MEMORY / 2**30:g} GiB of memory each), after {RESERVE_ATTEMPTS * RESERVE_TIMEOUT_S} s")


def node_id() -> str:
    """The Ray node this task or actor runs on (what the debug records of a run name)."""
    return import_ray().get_runtime_context().get_node_id()


def reason_skipped(error: InvalidImageError) -> str:
    """Why a file is skipped, without the name it was read under (as the local engine words it)."""
    message, prefix = str(error), f"{error.source}: "
    return message.removeprefix(prefix)


class ProgressCounts:
    """What the workers have done, by stage (reading, scoring): (steps, files), for the watchdog (a Ray actor)."""

    def __init__(self):
        self.done = {}

    def add(self, stage: str, files: int = 0) -> None:
        steps, done = self.done.get(stage, (0, 0))
        self.done[stage] = (steps + 1, done + files)

    def counts(self) -> dict[str, tuple[int, int]]:
        return self.done


def read_and_decode(batch: dict, filesystem, height: int, width: int, preprocessing, progress=None) -> dict:
    """Model inputs for a batch of files (their paths on `filesystem`), through the one image path (a Ray task).
    A file that is not a usable X-ray gives zeros and the reason it is skipped; one that cannot be read at all
    stops the run (StorageReadError: a setting or a mount missing on this node, which skipping would hide).
    `decoded_on` is this task's node."""
    paths = batch["path"]
    images = np.zeros((len(paths), height, width, 3), np.float32)
    reasons = []
    for i, path in enumerate(paths):
        try:
            data = read_bytes(filesystem, path)
        except OSError as error:
            raise StorageReadError(f"{path}: cannot read it on node {node_id()} ({error}); check that every node "
                                   "reaches it (docs/scale-out.md). What was scored is kept: --resume goes on"
                                   ) from None
        try:
            images[i] = load_model_input(data, height, width, preprocessing)
            reasons.append("")
        except InvalidImageError as error:
            reasons.append(reason_skipped(error))
    if progress is not None:
        progress.add.remote("reading", len(paths))
    return {"path": paths, "image": images, "reason": np.array(reasons, dtype=object),
            "decoded_on": np.array([node_id()] * len(reasons), dtype=object)}


class Scorer:
    """One model, loaded once per actor: P(positive class) and the out-of-distribution score of each decoded
    image (NaN for the skipped ones); `scored_on` is this actor's node."""

    def __init__(self, reference: str, revision: str | None, progress=None):
        self.predictor = load_predictor(reference, revision)
        self.progress = progress
        if progress is not None:
            progress.add.remote("scoring")  # a model loaded is scoring's first step

    def __call__(self, batch: dict) -> dict:
        good = np.array([not reason for reason in batch["reason"]], dtype=bool)
        probability, ood_score = np.full(len(good), np.nan), np.full(len(good), np.nan)
        if good.any():
            probabilities, ood_score[good] = self.predictor.assess(batch["image"][good])
            probability[good] = probabilities[:, self.predictor.positive_index]
        if self.progress is not None:
            self.progress.add.remote("scoring", len(good))
        return {"path": batch["path"], "probability": probability, "ood_score": ood_score, "reason": batch["reason"],
                "decoded_on": batch["decoded_on"], "scored_on": np.array([node_id()] * len(good), dtype=object)}


def model_source(predictor) -> tuple[str, str | None]:
    """What an actor loads: the model folder's absolute path when the model is a local folder, else the Hub
    reference at the revision this run resolved (so every actor scores with the same weights)."""
    if Path(predictor.reference).is_dir():
        return str(Path(predictor.reference).resolve()), None
    return predictor.reference, predictor.revision


def scoring_dataset(predictor, filesystem, paths: list[str], replicas: Replicas, batch_size: int, progress=None):
    """The files at `paths` on `filesystem` read, decoded and scored by `replicas` of the model, lazily: a Ray
    Dataset of `Scorer`'s batches. `progress`: a ProgressCounts actor that the tasks and replicas report to."""
    from ray.util.annotations import RayDeprecationWarning
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray = import_ray()
    # A block per batch: what the driver receives, writes down and, killed, loses. The paths start here, already
    # listed (see the module's docstring), and each task reads its batch's files.
    listed = ray.data.from_items([{"path": path} for path in paths],
                                 override_num_blocks=math.ceil(len(paths) / batch_size))
    decoded = listed.map_batches(read_and_decode, batch_size=batch_size, batch_format="numpy",
                                 num_cpus=replicas.slot,
                                 fn_kwargs={"filesystem": filesystem, "height": predictor.height,
                                            "width": predictor.width, "preprocessing": predictor.preprocessing,
                                            "progress": progress})
    # A replica's CPU slot is its bundle's, held on its node whether it runs or waits for a restart. The replica
    # asks only for the bundle's memory, which admits one replica per bundle: asking for the CPU too would have
    # Ray Data, which does not see the bundles, count it twice and starve reading and decoding.
    with warnings.catch_warnings():
        # Ray 2.60 takes an actor pool's placement group only as a keyword it calls deprecated (until Ray 2.64).
        warnings.simplefilter("ignore", RayDeprecationWarning)
        return decoded.map_batches(Scorer, batch_size=batch_size, batch_format="numpy",
                                   compute=ray.data.ActorPoolStrategy(size=replicas.count), num_cpus=0,
                                   memory=REPLICA_MEMORY, fn_constructor_args=(*model_source(predictor), progress),
                                   scheduling_strategy=PlacementGroupSchedulingStrategy(replicas.group))


def ray_scores(predictor, filesystem, files, sizes, replicas: Replicas, batch_size: int = 32,
               name: str | None = None, parts: Path | None = None, watchdog: Watchdog | None = None):
    """One model's per-file scores (`pneumo.batch.scoring.PART_COLUMNS`, indexed by relative path, in `files` order), by
    `replicas` of it. Ray Data's progress, when shown, names the run `name`.

    With `parts` (a folder), each batch's scores reach the disk there as one CSV file, written atomically, as this
    process receives them, and files already there (from an interrupted run) are not scored again: a run killed
    loses only the batches in flight. Each batch scored is a debug record of this module's logger: its size and
    the nodes that decoded and scored it. A `watchdog` follows the workers' progress (a ProgressCounts actor).
    """
    import pandas as pd
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray = import_ray()
    written, too_large, relative_of = ScoreParts(parts), [], {}
    for file, size in zip(files, sizes):
        relative = file.relative.as_posix()
        if relative in written.done:
            continue
        try:
            check_file_size(size, str(file.path))  # too large to read whole: refused before Ray reads it
            relative_of[str(file.path)] = relative
        except ImageTooLargeError as error:
            too_large.append((relative, np.nan, np.nan, reason_skipped(error)))
    written.add(pd.DataFrame(too_large, columns=PART_COLUMNS), write=False)  # cheap to check again on resuming
    if relative_of:
        progress = None
        if watchdog is not None:
            # On this node: a counter lost with a worker node would read as a stall.
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
            progress = ray.remote(num_cpus=0)(ProgressCounts).options(scheduling_strategy=here).remote()
            watchdog.begin(reading=len(relative_of), scoring=len(relative_of))
            watchdog.poll = lambda: ray.get(progress.counts.remote(), timeout=10)
        scored = scoring_dataset(predictor, filesystem, list(relative_of), replicas, batch_size, progress)
        scored.set_name(name or predictor.name)
        try:
            for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
                if watchdog is not None:
                    watchdog.advance("scoring")  # a batch received (its files are counted by the workers)
                LOG.debug("%s: %d files decoded on node %s, scored on node %s", name or predictor.name,
                          len(batch["path"]), ",".join(sorted(set(batch["decoded_on"]))),
                          ",".join(sorted(set(batch["scored_on"]))))
                written.add(pd.DataFrame({"file": [relative_of[path] for path in batch["path"]],
                                          "probability": batch["probability"].astype(float),
                                          "ood_score": batch["ood_score"].astype(float),
                                          "reason": batch["reason"].astype(str)}))
        except ray.exceptions.RayError as error:
            worker_error = pneumo_error_of(error)
            if worker_error is None:
                raise
            raise worker_error from None
        finally:
            if progress is not None:
                watchdog.poll = None
                ray.kill(progress)
    return written.table(files)


# The errors of loading a model, which a worker raising one passes on as a ModelLoadError (batch_eval.py: bad usage).
MODEL_LOAD_ERRORS = {kind.__name__ for kind in (ModelLoadError, ModelNotFoundError, HubUnavailableError)}


def pneumo_error_of(error: Exception) -> PneumoError | None:
    """The pneumo error a Ray worker raised, as one here: a ModelLoadError when the worker could not load its
    model (a model folder missing on a node, say), else a PneumoError; None when it was none of pneumo's.
    Ray passes a worker's exception on only as the text of its traceback, whose last such line it is."""
    found = re.findall(r"^pneumo\.errors\.(\w+): (.+)$", str(error), re.MULTILINE)
    if not found:
        return None
    kind, message = found[-1]
    return (ModelLoadError if kind in MODEL_LOAD_ERRORS else PneumoError)(f"on a Ray worker: {message}")


def run_folder_ray(folder_or_uri, out, predictors, *, batch_size: int = 32, threshold: float | None = None,
                   heatmaps: int = 0, shard: tuple[int, int] = (0, 1), ray_address: str | None = None,
                   actors: int | None = None, show_progress: bool = True, resume: bool = False,
                   figures: bool = True, intervals: bool = True, stall_s: float | None = DEFAULT_STALL_S,
                   hard_exit: bool = False) -> dict[str, dict]:
    """Score a folder or object-storage URI with every predictor on Ray and write all reports under `out`
    (those of `pneumo.batch.scoring.run_folder`); returns metrics per model.

    Ray starts on this machine without `ray_address`, and ends with the run; with one the run joins that
    cluster, as it does a Ray already initialised in this process. `actors`: model replicas per model (default:
    one per node; never more). The predictors here give each model's classes and threshold; every actor loads
    its own copy from the same folder or Hub revision. Scores reach `out/.parts/` as the run goes (removed once
    the reports are written); `resume` continues an interrupted run from there, as `pneumo.batch.scoring.run_folder` does.
    A run with no progress for `stall_s` seconds (None: no limit) stops with a RunStalledError
    (`pneumo.batch.watchdog`; `hard_exit` as there).
    """
    ray = import_ray()
    # As messages and reports name it: without keys written into a URI.
    folder = shown(folder_or_uri) if is_uri(folder_or_uri) else str(Path(folder_or_uri).resolve())
    if heatmaps and is_uri(folder_or_uri):
        raise DataFolderError(f"{folder}: heatmaps need a local folder (they read the images here)")
    with Watchdog(stall_s, folder, hard_exit=hard_exit) as watchdog:
        watchdog.begin(listing=None)
        filesystem, files, sizes = list_files(folder_or_uri, shard)
        if not files:
            raise nothing_to_score(folder, shard)
        parts = start_parts(out, run_settings(folder, shard, batch_size, threshold, predictors), resume)
        watchdog.begin(reserving=None)
        started = start_ray(ray_address)
        ray.data.DataContext.get_current().enable_progress_bars = show_progress
        all_predictions, skipped_frames, scored, replicas = {}, [], {}, None
        try:
            replicas = reserve_replicas(actors)
            for name, predictor in zip(unique_names(predictors), predictors):
                scores = ensemble_file_scores(predictor, scored)
                if scores is None and getattr(predictor, "members", None):
                    raise PneumoError(f"{predictor.folder}: the Ray engine scores an ensemble from its members; "
                                      "give them with --model before it, or use --engine local")
                if scores is None:
                    scores = ray_scores(predictor, filesystem, files, sizes, replicas, batch_size, name,
                                        parts / name, watchdog)
                scored[id(predictor)] = scores
                threshold_used = predictor.threshold if threshold is None else float(threshold)
                all_predictions[name], skipped = predictions_and_skipped(predictor, files, scores, threshold_used)
                skipped_frames.append(skipped)
            watchdog.begin()  # nothing left to watch: Ray's shutdown, then the reports at their own pace
        finally:
            if replicas:
                from ray.util.placement_group import remove_placement_group

                remove_placement_group(replicas.group)
            if started:
                ray.shutdown()
    all_metrics = write_reports(out, folder if is_uri(folder_or_uri) else folder_or_uri, shard, predictors,
                                all_predictions, skipped_frames, heatmaps,
                                figures=figures, intervals=intervals, show_progress=show_progress)
    shutil.rmtree(parts, ignore_errors=True)
    return all_metrics
