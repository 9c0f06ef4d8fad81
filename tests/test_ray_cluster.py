"""The Ray engine on a cluster of several nodes: a head without CPUs and two workers with one CPU each, each node
its own Ray processes on this machine (`ray.cluster_utils.Cluster`), with token authentication on, as `ray start`
turns it on. batch_eval.py joins it from a child process, as a driver on another machine would, so that a run
that never ends (the actors holding every CPU, say) fails its test instead of hanging the suite.

One cluster for the module, and one folder scored on it, the hard way (each Ray run costs the suite half a
minute): first read from a bucket (s3://, moto's S3 server, whose settings only the driver has); then from disk,
by a run killed with SIGKILL once it has written a few batches down, then the same command with --resume, which
loses worker 0 (every process of it killed at once) after that worker has scored for it. The cluster keeps one
worker after that, so the bucket's test comes first. The reports are compared with the local engine's.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, S3_SECRET, assert_close, upload_folder, write_synthetic_class_folders
from test_batch_ray import assert_same_table, read_csv

# Starts the cluster, writes its address and node ids to the file named by argv[1], kills every process of the
# worker whose number the test process writes on its stdin at once (SIGKILL, as when its machine is lost; the file
# argv[1].lost-N says it is done), and shuts the cluster down when the test process closes its stdin.
CLUSTER = """
import json, os, sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
with open(sys.argv[1] + ".part", "w") as file:
    json.dump({"address": cluster.address, "head": cluster.head_node.node_id,
               "workers": [node.node_id for node in workers]}, file)
os.replace(sys.argv[1] + ".part", sys.argv[1])
for line in sys.stdin:
    cluster.remove_node(workers[int(line)], allow_graceful=False)
    open(f"{sys.argv[1]}.lost-{int(line)}", "w").close()
cluster.shutdown()
"""

# batch_eval.py with pneumo.batch.ray_engine's debug records (the nodes that decoded and scored each batch) on stderr.
DRIVER = """
import logging, sys
import batch_eval
logging.basicConfig(format="%(name)s: %(message)s")
logging.getLogger("pneumo.batch.ray_engine").setLevel(logging.DEBUG)
sys.exit(batch_eval.main(sys.argv[1:]))
"""

# A run here takes under a minute on two busy cores: one that has not ended in five never will (it must fail,
# not hang).
RUN_TIMEOUT_S = 300
AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
# Ray declares a node dead after it fails health checks in a row: 3 a second apart here, rather than 5 three
# seconds apart, so that a lost node costs the test seconds, not a quarter of a minute. A check still waits for its
# answer as long as by default (10 s): a busy node is not declared dead.
HEALTH_CHECKS = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
IMAGES = 120  # in the folder scored; 60 batches of 2, so that a run has scored some and not all for a while


@dataclass
class RayCluster:
    address: str
    head: str  # node ids
    workers: list[str]
    environment: dict  # what a driver needs: the cluster's token among them
    process: subprocess.Popen
    info: Path

    def kill_worker(self, index: int) -> None:
        """Kill every process of worker `index` at once (SIGKILL), as when its machine is lost; returns when they
        are gone."""
        self.process.stdin.write(f"{index}\n".encode())
        self.process.stdin.flush()
        done = Path(f"{self.info}.lost-{index}")
        deadline = time.monotonic() + 60
        while not done.exists():
            assert self.process.poll() is None and time.monotonic() < deadline, "the cluster did not kill the node"
            time.sleep(0.01)


@pytest.fixture(scope="module")
def cluster():
    """The cluster (RayCluster). Ray's files, its record of the latest cluster among them, stay in a folder of the
    module's own (RAY_TMPDIR), short enough for Ray's socket paths."""
    folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None))
    (folder / "token").write_text(os.urandom(32).hex())  # as `ray get-auth-token --generate` makes one
    # The nodes start without storage settings (AWS_*): the driver's must reach them.
    environment = {key: value for key, value in os.environ.items()
                   if key not in AUTH_VARIABLES and not key.startswith("AWS_")}
    environment.update(RAY_TMPDIR=str(folder), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(folder / "token"))
    info = folder / "cluster.json"
    with open(folder / "cluster.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-c", CLUSTER, str(info)], stdin=subprocess.PIPE,
                                   stdout=log, stderr=subprocess.STDOUT, env={**environment, **HEALTH_CHECKS})
    try:
        deadline = time.monotonic() + 180
        while not info.exists():
            assert process.poll() is None and time.monotonic() < deadline, (folder / "cluster.log").read_text()
            time.sleep(0.5)
        nodes = json.loads(info.read_text())
        yield RayCluster(nodes["address"], nodes["head"], nodes["workers"], environment, process, info)
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(folder, ignore_errors=True)


def batch_eval(arguments, environment, timeout=RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DRIVER, *map(str, arguments)], check=False, cwd=REPO,
                          env=environment, capture_output=True, text=True, timeout=timeout)


@contextmanager
def started_batch_eval(arguments, environment, log: Path):
    """batch_eval.py (DRIVER) running, its stdout and stderr going to `log`; killed if still running at the end."""
    with open(log, "w") as file:
        run = subprocess.Popen([sys.executable, "-c", DRIVER, *map(str, arguments)], cwd=REPO, env=environment,
                               stdout=file, stderr=subprocess.STDOUT)
    try:
        yield run
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def wait_until(condition, run: subprocess.Popen, what: str):
    """Poll `condition` until it holds (returning its value), failing if `run` ends first or in RUN_TIMEOUT_S."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (value := condition()):
        assert run.poll() is None, f"the run ended (exit status {run.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} in {RUN_TIMEOUT_S} s"
        time.sleep(0.01)
    return value


def finish(run: subprocess.Popen, log: Path) -> int:
    try:
        return run.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        run.kill()
        pytest.fail(f"the run did not end in {RUN_TIMEOUT_S} s: {log.read_text()[-3000:]}")


def scored_batches(log_text: str) -> list[tuple[int, str, str]]:
    """(files, nodes that decoded them, nodes that scored them) of each batch, from the driver's debug records."""
    return [(int(count), decoded, scored) for count, decoded, scored
            in re.findall(r"(\d+) files decoded on node (\S+), scored on node (\S+)$", log_text, re.MULTILINE)]


@pytest.fixture(scope="module")
def xrays(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster-xrays")
    write_synthetic_class_folders(root / "test", IMAGES // 2, seed=90)
    return root


@pytest.fixture(scope="module")
def local_run(xrays, tiny_model_folder, tmp_path_factory):
    """The folder's reports from the local engine, uninterrupted."""
    import batch_eval as entry_point

    out = tmp_path_factory.mktemp("local-run")
    assert entry_point.main([str(xrays), "--out", str(out), "--model", str(tiny_model_folder),
                             "--no-figures", "--no-intervals"]) == 0
    return out


@pytest.fixture(scope="module")
def bucket_run(cluster, xrays, tiny_model_folder, s3_server, tmp_path_factory):
    """(the reports folder, the run) of the folder read from a bucket on the cluster, in batches of 8 (15 blocks of
    paths: Ray Data's own reader listed more than 16 in tasks that asked for a whole CPU, and waited for ever).
    Only the driver has the storage settings (s3_server's AWS variables)."""
    uri = upload_folder(s3_server, xrays, "cluster-xrays", "site")
    out = tmp_path_factory.mktemp("bucket-run")
    run = batch_eval([uri, "--out", out, "--model", tiny_model_folder, "--engine", "ray", "--ray-address",
                      cluster.address, "--batch-size", "8", "--no-figures", "--no-intervals", "--stall-timeout",
                      "120"], {**cluster.environment, **s3_server})
    return out, run


def test_a_bucket_scored_on_the_cluster_predicts_what_the_local_engine_predicts(bucket_run, local_run):
    out, run = bucket_run
    assert run.returncode == 0, run.stderr[-3000:]
    assert_same_table(read_csv(out / "tiny-cnn-lstm" / "predictions.csv"),
                      read_csv(local_run / "tiny-cnn-lstm" / "predictions.csv"), "predictions.csv")
    assert len(read_csv(out / "tiny-cnn-lstm" / "predictions.csv")) == IMAGES


def test_the_storage_secret_appears_in_no_log_and_no_output(cluster, bucket_run):
    """The secret key travels to the workers inside the filesystem the tasks get, never in Ray's runtime
    environment: it is in none of the run's output, its reports, or Ray's files (logs among them)."""
    out, run = bucket_run
    assert run.returncode == 0, run.stderr[-3000:]
    assert S3_SECRET not in run.stdout + run.stderr
    for folder in (out, Path(cluster.environment["RAY_TMPDIR"])):
        leaked = [path for path in folder.rglob("*") if path.is_file() and not path.is_socket()
                  and S3_SECRET.encode() in path.read_bytes()]
        assert not leaked


@dataclass
class ClusterRun:
    out: Path
    kept: int  # files whose scores the killed run had written down
    interrupted_log: str  # each run's output, its debug records among it
    resumed_log: str
    exit_status: int  # the resumed run's
    running_when_lost: bool  # whether the resumed run was still going when the worker was gone
    scored_when_lost: int  # files whose scores had been written down by then


@pytest.fixture(scope="module")
def cluster_run(cluster, xrays, tiny_model_folder, tmp_path_factory):
    """The folder scored on the cluster in batches of 2 by a run killed (SIGKILL) once it has written three batches
    down, then by the same command with --resume; once the resumed run has received a batch scored on worker 0,
    every process of worker 0 is killed. The engine waits for both model replicas before scoring
    (RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S), so that the test sees where the work goes, not which replica loaded
    first."""
    from pneumo.batch.scoring import PARTS_FOLDER, read_parts

    out, logs = tmp_path_factory.mktemp("cluster-run"), tmp_path_factory.mktemp("cluster-run-logs")
    parts = out / PARTS_FOLDER / tiny_model_folder.name
    arguments = [xrays, "--out", out, "--model", tiny_model_folder, "--engine", "ray", "--ray-address",
                 cluster.address, "--batch-size", "2", "--no-figures", "--no-intervals"]
    environment = {**cluster.environment, "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "120"}
    with started_batch_eval(arguments, environment, logs / "interrupted.log") as interrupted:
        wait_until(lambda: len(list(parts.glob("part-*.csv"))) >= 3, interrupted, "three batches were written down")
        interrupted.send_signal(signal.SIGKILL)
        assert interrupted.wait() == -signal.SIGKILL
    kept = len(read_parts(parts))

    def worker_that_scored():
        """1 + the index of a worker that scored a batch of the resumed run, or 0. Not always worker 0: on a loaded
        machine one replica can start many seconds after the other and score nothing before the run ends."""
        nodes = {node for _, _, scored in scored_batches((logs / "resumed.log").read_text())
                 for node in scored.split(",")}
        return next((index + 1 for index, worker in enumerate(cluster.workers) if worker in nodes), 0)

    with started_batch_eval([*arguments, "--resume"], environment, logs / "resumed.log") as resumed:
        lost = wait_until(worker_that_scored, resumed, "a batch was scored on a worker") - 1
        cluster.kill_worker(lost)
        running, scored = resumed.poll() is None, len(read_parts(parts))
        status = finish(resumed, logs / "resumed.log")
    return ClusterRun(out, kept, (logs / "interrupted.log").read_text(), (logs / "resumed.log").read_text(),
                      status, running, scored)


def read_predictions(folder) -> pd.DataFrame:
    return pd.read_csv(Path(folder) / "tiny-cnn-lstm" / "predictions.csv", keep_default_na=False)


def test_a_run_on_the_cluster_predicts_what_the_local_engine_predicts(cluster_run, local_run):
    assert cluster_run.exit_status == 0, cluster_run.resumed_log[-3000:]
    expected, scored = read_predictions(local_run), read_predictions(cluster_run.out)
    assert len(expected) == IMAGES
    assert list(scored.file) == list(expected.file)
    assert (scored.pop("probability_pneumonia") - expected.pop("probability_pneumonia")).abs().max() < 1e-5
    assert np.allclose(scored.pop("ood_score"), expected.pop("ood_score"), rtol=1e-3, atol=0)  # as test_batch_ray
    pd.testing.assert_frame_equal(scored, expected)


def test_both_workers_score_and_the_head_without_cpus_runs_nothing(cluster, cluster_run):
    batches = scored_batches(cluster_run.interrupted_log) + scored_batches(cluster_run.resumed_log)
    decoded = {node for _, nodes, _ in batches for node in nodes.split(",")}
    scored = {node for _, _, nodes in batches for node in nodes.split(",")}
    assert scored == set(cluster.workers)
    assert decoded <= set(cluster.workers) and cluster.head not in decoded | scored


def test_a_killed_run_resumed_scores_only_what_it_had_not_written_down(cluster_run):
    """The killed run loses only the batches in flight: what it wrote down is not scored again."""
    assert cluster_run.exit_status == 0, cluster_run.resumed_log[-3000:]
    assert 6 <= cluster_run.kept < IMAGES
    assert sum(count for count, _, _ in scored_batches(cluster_run.resumed_log)) == IMAGES - cluster_run.kept


def test_a_resumed_run_ends_with_the_reports_of_an_uninterrupted_one(cluster_run, local_run):
    """Every table to 1e-6 (probabilities) and 1e-3 relative (the out-of-distribution score), as the engines are
    compared (test_batch_ray), and the metrics to 1e-6; no parts left behind."""
    from pneumo.batch.scoring import PARTS_FOLDER, RUN_FILE

    assert cluster_run.exit_status == 0, cluster_run.resumed_log[-3000:]
    resumed = cluster_run.out
    written = sorted(p.relative_to(local_run).as_posix() for p in local_run.rglob("*") if p.is_file())
    assert sorted(p.relative_to(resumed).as_posix() for p in resumed.rglob("*") if p.is_file()) == written
    assert not (resumed / PARTS_FOLDER).exists()
    for relative in written:
        if relative.endswith(".csv"):
            assert_same_table(read_csv(resumed / relative), read_csv(local_run / relative), relative)
        elif relative != RUN_FILE:
            assert_close(*(json.loads((folder / relative).read_text()) for folder in (resumed, local_run)), relative)


def test_a_run_that_loses_a_worker_node_completes_on_the_other(cluster_run):
    """The worker killed held one of the two model replicas and had scored for the run, which had files left to
    score when the worker was gone (what it then scored is checked above)."""
    assert cluster_run.running_when_lost and cluster_run.scored_when_lost < IMAGES
    assert cluster_run.exit_status == 0, cluster_run.resumed_log[-3000:]


def test_a_driver_without_the_clusters_token_is_refused_in_one_line(cluster, xrays, tiny_model_folder, tmp_path):
    """RAY_AUTH_MODE unset: Ray sends no token to an address it is given. Ray's own retries are cut short
    (RAY_gcs_server_port_wait_time_s) to keep the test quick."""
    without_token = {key: value for key, value in cluster.environment.items() if key not in AUTH_VARIABLES}
    run = batch_eval([xrays, "--out", tmp_path, "--model", tiny_model_folder, "--engine", "ray",
                      "--ray-address", cluster.address], {**without_token, "RAY_gcs_server_port_wait_time_s": "2"},
                     timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        f"batch_eval.py: --ray-address {cluster.address}: the Ray cluster refused this driver (token authentication; "
        "RAY_AUTH_MODE is unset): set RAY_AUTH_MODE=token, with the cluster's token (`ray get-auth-token` on its "
        "head node) in RAY_AUTH_TOKEN, in the file that RAY_AUTH_TOKEN_PATH names, or in ~/.ray/auth_token")
