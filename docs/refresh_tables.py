"""Rewrite the generated results tables in README.md and docs/*.md from the model folders.

    python docs/refresh_tables.py            # rewrite every block in place
    python docs/refresh_tables.py --check    # change nothing; exit 1 naming the files whose blocks are stale

A generated block is

    <!-- pneumo results NAME -->
    (the output of `pneumo results NAME` for the bundled models)
    <!-- end pneumo results -->

where NAME is one of pneumo.hub.results.TABLES (headline, splits, site). Everything between the two lines is
replaced, so a table of results is never typed in: the numbers come from the model folders alone.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script, from any folder
    sys.path.insert(0, str(REPO))

from pneumo.hub.results import TABLES, bundled_folders  # noqa: E402

OPENING = re.compile(r"<!-- pneumo results (\S+) -->")
BLOCK = re.compile(r"(<!-- pneumo results (\S+) -->\n)(.*?)(<!-- end pneumo results -->)", re.DOTALL)


def documents(root: Path = REPO) -> list[Path]:
    """The files that may hold generated blocks: README.md and the Markdown files directly in docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def current_tables(folders=None) -> dict[str, str]:
    """Every table by name, as `pneumo results NAME` prints it now (default: for the bundled models)."""
    folders = bundled_folders() if folders is None else folders
    return {name: table(folders) for name, table in TABLES.items()}


def refreshed(text: str, tables: dict[str, str]) -> str:
    """`text` with every generated block holding `tables[NAME]`. The blank lines around the table keep it a
    table in every Markdown renderer. A block with an unknown name, or without its end line, is an error."""
    if len(OPENING.findall(text)) != len(BLOCK.findall(text)):
        raise ValueError("a '<!-- pneumo results NAME -->' line has no '<!-- end pneumo results -->' after it")

    def replace(match: re.Match) -> str:
        opening, name, _, end = match.groups()
        if name not in tables:
            raise ValueError(f"'<!-- pneumo results {name} -->': no such table (one of {', '.join(tables)})")
        return f"{opening}\n{tables[name]}\n\n{end}"

    return BLOCK.sub(replace, text)


def stale_documents(paths=None, tables=None) -> list[Path]:
    """The documents whose generated blocks differ from `refreshed`'s."""
    tables = current_tables() if tables is None else tables
    return [path for path in (documents() if paths is None else paths)
            if refreshed(path.read_text(encoding="utf-8"), tables) != path.read_text(encoding="utf-8")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Rewrite the generated results tables in README.md and docs/*.md "
                                                 "from the bundled model folders.")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any block is out of date")
    args = parser.parse_args(argv)
    tables = current_tables()
    stale = stale_documents(tables=tables)
    if args.check:
        for path in stale:
            print(f"{path.relative_to(REPO)}: out of date (python docs/refresh_tables.py rewrites it)")
        return 1 if stale else 0
    for path in stale:
        path.write_text(refreshed(path.read_text(encoding="utf-8"), tables), encoding="utf-8")
        print(f"rewrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
