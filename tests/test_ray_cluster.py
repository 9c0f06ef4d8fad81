"""The Ray engine on a cluster of several nodes: a head without CPUs and two workers with one CPU each, each node
its own Ray processes on this machine (`ray.cluster_utils.Cluster`), with token authentication on, as `ray start`
turns it on. batch_eval.py joins it from a child process, as a driver on another machine would, so that a run
that never ends (the actors holding every CPU, say) fails its test instead of hanging the suite.

One cluster for the module; the run scored on it is shared by the tests that read it.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, write_synthetic_class_folders

# Starts the cluster, writes its address and node ids to the file named by argv[1], and shuts it down when the
# test process closes its stdin.
CLUSTER = """
import json, os, sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
with open(sys.argv[1] + ".part", "w") as file:
    json.dump({"address": cluster.address, "head": cluster.head_node.node_id,
               "workers": [node.node_id for node in workers]}, file)
os.replace(sys.argv[1] + ".part", sys.argv[1])
sys.stdin.read()
cluster.shutdown()
"""

# batch_eval.py with pneumo.batch_ray's debug records (the nodes that decoded and scored each batch) on stderr.
DRIVER = """
import logging, sys
import batch_eval
logging.basicConfig(format="%(name)s: %(message)s")
logging.getLogger("pneumo.batch_ray").setLevel(logging.DEBUG)
sys.exit(batch_eval.main(sys.argv[1:]))
"""

# A run here takes under a minute on two busy cores: one that has not ended in five never will (it must fail,
# not hang).
RUN_TIMEOUT_S = 300
AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


@pytest.fixture(scope="module")
def cluster():
    """(address, head node id, worker node ids, environment that carries the cluster's token). Ray's files, its
    record of the latest cluster among them, stay in a folder of the module's own (RAY_TMPDIR), short enough
    for Ray's socket paths."""
    folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None))
    (folder / "token").write_text(os.urandom(32).hex())  # as `ray get-auth-token --generate` makes one
    environment = {key: value for key, value in os.environ.items() if key not in AUTH_VARIABLES}
    environment.update(RAY_TMPDIR=str(folder), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(folder / "token"))
    info = folder / "cluster.json"
    with open(folder / "cluster.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-c", CLUSTER, str(info)], stdin=subprocess.PIPE,
                                   stdout=log, stderr=subprocess.STDOUT, env=environment)
    try:
        deadline = time.monotonic() + 180
        while not info.exists():
            assert process.poll() is None and time.monotonic() < deadline, (folder / "cluster.log").read_text()
            time.sleep(0.5)
        nodes = json.loads(info.read_text())
        yield nodes["address"], nodes["head"], nodes["workers"], environment
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


@pytest.fixture(scope="module")
def xrays(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster-xrays")
    write_synthetic_class_folders(root / "test", 12, seed=90)
    return root


@pytest.fixture(scope="module")
def cluster_run(cluster, xrays, tiny_model_folder, tmp_path_factory):
    """(the run's folder, its stderr): the folder scored on the cluster. The engine waits for both model replicas
    before scoring (RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S), so that the test sees where the work goes, not
    which replica loaded first."""
    address, _, _, environment = cluster
    out = tmp_path_factory.mktemp("cluster-run")
    arguments = [xrays, "--out", out, "--model", tiny_model_folder, "--engine", "ray", "--ray-address", address,
                 "--batch-size", "4", "--no-figures", "--no-intervals"]
    try:
        run = batch_eval(arguments, {**environment, "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "120"})
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"the run on the cluster did not end in {RUN_TIMEOUT_S} s: {(timeout.stderr or b'')[-3000:]}")
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run.stderr


def read_predictions(folder) -> pd.DataFrame:
    return pd.read_csv(Path(folder) / "tiny-cnn-lstm" / "predictions.csv", keep_default_na=False)


def test_a_run_on_the_cluster_predicts_what_the_local_engine_predicts(cluster_run, xrays, tiny_model_folder,
                                                                      tmp_path):
    import batch_eval as entry_point

    assert entry_point.main([str(xrays), "--out", str(tmp_path), "--model", str(tiny_model_folder),
                             "--no-figures", "--no-intervals"]) == 0
    expected, scored = read_predictions(tmp_path), read_predictions(cluster_run[0])
    assert len(expected) == 24
    assert list(scored.file) == list(expected.file)
    assert (scored.pop("probability_pneumonia") - expected.pop("probability_pneumonia")).abs().max() < 1e-5
    assert np.allclose(scored.pop("ood_score"), expected.pop("ood_score"), rtol=1e-3, atol=0)  # as test_batch_ray
    pd.testing.assert_frame_equal(scored, expected)


def test_both_workers_score_and_the_head_without_cpus_runs_nothing(cluster, cluster_run):
    _, head, workers, _ = cluster
    batches = re.findall(r"(\d+) files decoded on node (\S+), scored on node (\S+)$", cluster_run[1], re.MULTILINE)
    assert sum(int(count) for count, _, _ in batches) == 24
    decoded = {node for _, nodes, _ in batches for node in nodes.split(",")}
    scored = {node for _, _, nodes in batches for node in nodes.split(",")}
    assert scored == set(workers)
    assert decoded <= set(workers) and head not in decoded | scored


def test_a_driver_without_the_clusters_token_is_refused_in_one_line(cluster, xrays, tiny_model_folder, tmp_path):
    """RAY_AUTH_MODE unset: Ray sends no token to an address it is given. Ray's own retries are cut short
    (RAY_gcs_server_port_wait_time_s) to keep the test quick."""
    address, _, _, environment = cluster
    without_token = {key: value for key, value in environment.items() if key not in AUTH_VARIABLES}
    run = batch_eval([xrays, "--out", tmp_path, "--model", tiny_model_folder, "--engine", "ray",
                      "--ray-address", address], {**without_token, "RAY_gcs_server_port_wait_time_s": "2"},
                     timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        f"batch_eval.py: --ray-address {address}: the Ray cluster refused this driver (token authentication; "
        "RAY_AUTH_MODE is unset): set RAY_AUTH_MODE=token, with the cluster's token (`ray get-auth-token` on its "
        "head node) in RAY_AUTH_TOKEN, in the file that RAY_AUTH_TOKEN_PATH names, or in ~/.ray/auth_token")
