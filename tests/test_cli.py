"""The `pneumo` command: one entry, each subcommand's --help lists every option with a sentence."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pneumo.cli import SUBCOMMANDS, main

REPO = Path(__file__).resolve().parents[1]


def help_of(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--help"])
    assert stopped.value.code == 0
    return capsys.readouterr().out


def options_without_help(text: str) -> list[str]:
    """Option lines of argparse's help with no sentence after them (on the line or the next one, indented)."""
    lines = text.splitlines()
    bare = []
    for index, line in enumerate(lines):
        if not re.match(r"^  -", line):
            continue
        own_text = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        follows = index + 1 < len(lines) and re.match(r"^\s{8,}\S", lines[index + 1])
        if len(own_text) < 2 and not follows:
            bare.append(line.strip())
    return bare


def test_pneumo_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    assert all(name in text for name in SUBCOMMANDS)


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_each_subcommand_help_gives_every_option_a_sentence(capsys, name):
    text = help_of(capsys, name)
    assert text.startswith(f"usage: pneumo {name}")
    assert options_without_help(text) == []


@pytest.mark.parametrize("action", ["push", "pull", "deploy-space"])
def test_each_hub_action_help_gives_every_option_a_sentence(capsys, action):
    assert options_without_help(help_of(capsys, "hub", action)) == []


def test_an_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["trian"])
    assert stopped.value.code == 2
    assert "invalid choice: 'trian'" in capsys.readouterr().err


def test_python_dash_m_pneumo_and_the_console_script_run_the_same_command():
    by_module = subprocess.run([sys.executable, "-m", "pneumo", "site-eval", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=120)
    assert by_module.returncode == 0, by_module.stderr
    assert "usage: pneumo site-eval" in by_module.stdout
    script = shutil.which("pneumo", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the console script is installed by `pip install -e .` (requirements-dev.txt)")
    by_script = subprocess.run([script, "site-eval", "--help"], capture_output=True, text=True, timeout=120)
    assert by_script.stdout == by_module.stdout


def test_pneumo_data_points_every_command_that_reads_the_dataset_at_it(monkeypatch, tmp_path):
    from pneumo.training.train import parse_args

    monkeypatch.setenv("PNEUMO_DATA", str(tmp_path))
    assert parse_args(["--arch", "cnn_lstm", "--out", "runs/x"]).data == str(tmp_path)
    assert parse_args(["--arch", "cnn_lstm", "--out", "runs/x", "--data", "elsewhere"]).data == "elsewhere"
