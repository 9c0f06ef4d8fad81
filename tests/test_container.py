"""The container and the git attributes, checked without building anything: the Dockerfile is linted, and its
CMD runs here with its ENV, as the container runs it, until its own HEALTHCHECK passes."""

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [tuple(line.split(None, 1)) for line in lines]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for instruction, arguments in instructions():
        if instruction == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(arguments))
    return env


def exec_form(instruction_name: str) -> list[str]:
    arguments = [args for name, args in instructions() if name == instruction_name][-1]
    if instruction_name == "HEALTHCHECK":
        arguments = arguments.split("CMD", 1)[1]
    return json.loads(arguments)


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_a_non_root_user_and_copies_what_exists():
    users = [args for name, args in instructions() if name == "USER"]
    assert users and users[-1] not in ("root", "0")
    for name, arguments in instructions():
        if name == "COPY" and not arguments.startswith("--from"):
            *sources, _ = arguments.split()
            assert all((REPO / source).exists() for source in sources if not source.startswith("--")), arguments


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_container_command_serves_the_demo_and_passes_its_health_check(tmp_path):
    """CMD and HEALTHCHECK exactly as written, with the image's ENV (its port moved to a free one), from
    the folder the image copies the app into."""
    env = {**os.environ, **dockerfile_env(), "GRADIO_SERVER_PORT": str(free_port()), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1"}
    python = os.path.dirname(sys.executable)
    env["PATH"] = python + os.pathsep + env.get("PATH", "")  # "python" is this environment's, as in the image
    assert env["GRADIO_SERVER_NAME"] == "0.0.0.0"  # reachable from outside the container
    server = subprocess.Popen(exec_form("CMD"), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        deadline, healthy = time.monotonic() + 240, False
        while time.monotonic() < deadline and server.poll() is None and not healthy:
            healthy = subprocess.run(exec_form("HEALTHCHECK"), env=env, capture_output=True).returncode == 0
            time.sleep(0 if healthy else 2)
        assert healthy, "the health check never passed"
    finally:
        server.terminate()
        output = server.communicate(timeout=60)[0]
    assert f"0.0.0.0:{env['GRADIO_SERVER_PORT']}" in output, output


@pytest.mark.parametrize("path", ["models/cnn-lstm/README.md", "examples/x.png", "tests/data/x.png"])
def test_tracked_folders_stay_plain_git_objects(path):
    assert _attribute("filter", path) == "unspecified"


def test_every_tracked_binary_stays_a_plain_git_object():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    binaries = [path for path in tracked if path.endswith((".keras", ".h5", ".npz", ".png"))]
    assert binaries and all(_attribute("filter", path) == "unspecified" for path in binaries)


def test_new_weights_elsewhere_go_through_lfs():
    assert _attribute("filter", "my-space/model.weights.h5") == "lfs"


def _attribute(name: str, path: str) -> str:
    output = subprocess.run(["git", "check-attr", name, "--", path], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout
    return output.rsplit(": ", 1)[-1].strip()
