"""The README and docs/*.md: short enough to read, every results table generated, every command in a code block
one that runs. The README is also the Hugging Face Space's page, and CI runs its set-up commands."""

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from pneumo.cli import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SETUP_COMMANDS = [
    "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt && python app.py",
    "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements-dev.txt && python -m pytest",
]


def load_refresh_tables():
    """docs/refresh_tables.py, imported by its path (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("refresh_tables", REPO / "docs" / "refresh_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


refresh_tables = load_refresh_tables()
DOCUMENTS = refresh_tables.documents()


def code_lines(path: Path) -> list[str]:
    """The commands in a document's fenced code blocks: continuation lines joined, comments dropped, and each
    `&&` or `;` part on its own."""
    text = path.read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"^\s*```[^\n]*\n(.*?)^\s*```", text, re.DOTALL | re.MULTILINE):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            lines.extend(part.strip() for part in re.split(r"&&|;", line) if part.strip())
    return lines


def without_variables(command: str) -> str:
    """`KERAS_BACKEND=jax pneumo train ...` -> `pneumo train ...`."""
    return re.sub(r"^(\w+=\S*\s+)+", "", command)


def pneumo_commands() -> list[tuple[str, str]]:
    return sorted({(path.relative_to(REPO).as_posix(), without_variables(line)) for path in DOCUMENTS
                   for line in code_lines(path) if without_variables(line).startswith("pneumo ")})


def batch_eval_commands() -> list[tuple[str, str]]:
    return sorted({(path.relative_to(REPO).as_posix(), match) for path in DOCUMENTS for line in code_lines(path)
                   for match in re.findall(r"python batch_eval\.py(?: \S+)?", line)})


def help_argv(command: str) -> list[str]:
    """`pneumo hub push models/x --repo-id R` -> ["hub", "push", "--help"]: the subcommand, its action where it
    names one (a bare lowercase word, not a path or a placeholder), then --help."""
    words = shlex.split(command)[1:]
    action = words[1:2] if len(words) > 1 and re.fullmatch(r"[a-z][a-z0-9-]*", words[1]) else []
    return [words[0], *action, "--help"]


@pytest.fixture(scope="module")
def current_tables():
    return refresh_tables.current_tables()


def test_the_readme_fits_in_220_lines():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 220


def test_the_readme_keeps_both_set_up_commands_for_a_fresh_machine():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert all(command in lines for command in SETUP_COMMANDS)


def test_the_readme_keeps_the_spaces_front_matter_first():
    text = README.read_text(encoding="utf-8")
    assert text.startswith("---\ntitle: pneumo\n") and "\napp_file: app.py\n" in text.split("\n---\n", 1)[0]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.relative_to(REPO).as_posix())
def test_every_generated_table_is_what_refresh_tables_writes_now(path, current_tables):
    text = path.read_text(encoding="utf-8")
    assert refresh_tables.refreshed(text, current_tables) == text, "run python docs/refresh_tables.py"


def test_the_readme_shows_the_headline_table_generated():
    assert "<!-- pneumo results headline -->" in README.read_text(encoding="utf-8")


def test_a_block_of_an_unknown_table_is_an_error():
    with pytest.raises(ValueError, match="no such table"):
        refresh_tables.refreshed("<!-- pneumo results headlines -->\n<!-- end pneumo results -->\n", {"headline": ""})


def test_a_block_without_its_end_line_is_an_error():
    with pytest.raises(ValueError, match="no '<!-- end pneumo results -->'"):
        refresh_tables.refreshed("<!-- pneumo results headline -->\n| a |\n", {"headline": "| b |"})


def test_refreshing_replaces_only_what_lies_inside_a_block():
    text = "before\n<!-- pneumo results splits -->\nold\n<!-- end pneumo results -->\nafter\n"
    assert refresh_tables.refreshed(text, {"splits": "| new |"}) == (
        "before\n<!-- pneumo results splits -->\n\n| new |\n\n<!-- end pneumo results -->\nafter\n")


def test_the_documents_show_pneumo_and_batch_eval_commands():
    assert pneumo_commands() and batch_eval_commands()


@pytest.mark.parametrize("where,command", pneumo_commands(), ids=lambda value: value)
def test_every_pneumo_command_in_a_code_block_is_accepted(capsys, where, command):
    with pytest.raises(SystemExit) as stopped:
        main(help_argv(command))
    assert stopped.value.code == 0, capsys.readouterr().err


@pytest.mark.parametrize("where,command", batch_eval_commands(), ids=lambda value: value)
def test_every_batch_eval_command_in_a_code_block_is_accepted(capsys, where, command):
    import batch_eval

    argv = ["merge", "--help"] if command.endswith(" merge") else ["--help"]
    with pytest.raises(SystemExit) as stopped:
        batch_eval.main(argv)
    assert stopped.value.code == 0, capsys.readouterr().err


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.relative_to(REPO).as_posix())
def test_batch_eval_is_run_with_python_in_every_code_block(path):
    # batch_eval.py is a script beside the library, not a command on the PATH.
    assert [line for line in code_lines(path) if without_variables(line).startswith("batch_eval.py")] == []


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.relative_to(REPO).as_posix())
def test_no_command_names_a_module_path(path):
    # `pneumo SUBCOMMAND` is the command; `python -m pneumo.something` was its old form.
    assert "python -m pneumo." not in path.read_text(encoding="utf-8")
