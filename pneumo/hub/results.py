"""`pneumo results`: the Markdown tables of the model folders that the README, the docs and model_card.md show
(docs/refresh_tables.py writes them there), so every number they quote comes from the folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from .bundled import BUNDLED_MODELS
from .model_card import headline_table, results_table, site_eval_table

TABLES = {"headline": headline_table, "splits": results_table, "site": site_eval_table}


def bundled_folders() -> list[Path]:
    return [folder for _, folder in BUNDLED_MODELS.values()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pneumo results", description=__doc__.split("\n")[0].split(": ", 1)[1])
    parser.add_argument("table", choices=TABLES, help="headline: every model out of the box and at a new site; "
                                                      "splits: validation, hold-out and test metrics; site: every "
                                                      "pneumo site-eval setting at each prevalence")
    parser.add_argument("folders", nargs="*", help="model folders (default: the bundled models)")
    args = parser.parse_args(argv)
    print(TABLES[args.table](args.folders or bundled_folders()))
    return 0
