"""The `pneumo` command and its subcommands (`main`); what every subcommand does with an error its user can act on
(one line, exit status 1: `command`); and the argument types the subcommands share."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

from .errors import PneumoError


def command(program: str, also: tuple[type[Exception], ...] = ()):
    """Decorate a command's `main(argv)`: a PneumoError (or one of `also`) becomes one line on stderr, prefixed
    with `program`, and exit status 1 instead of a traceback. Usage errors stay argparse's (exit 2)."""
    def decorate(main):
        @functools.wraps(main)
        def run(argv=None) -> int:
            try:
                return main(argv)
            except (PneumoError, *also) as error:
                print(f"{program}: {error}", file=sys.stderr)
                return 1
        return run
    return decorate


# The dataset (Kermany et al. 2018, laid out as train/ and test/, each with NORMAL/ and PNEUMONIA/): the commands
# that read the training data find it here unless told otherwise with --data.
DATA_VARIABLE = "PNEUMO_DATA"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray"


def dataset_root() -> str | None:
    """$PNEUMO_DATA, else ../shared/data/chest_xray beside the checkout where it exists, else None."""
    if os.environ.get(DATA_VARIABLE):
        return os.environ[DATA_VARIABLE]
    return str(SHARED_DATA) if SHARED_DATA.is_dir() else None


def add_dataset_argument(parser, help_text: str) -> None:
    """--data: the dataset root, by default `dataset_root()` (required where there is none)."""
    default = dataset_root()
    parser.add_argument("--data", default=default, required=default is None,
                        help=f"{help_text} (default: ${DATA_VARIABLE}, else ../shared/data/chest_xray where it exists"
                             f"{'; now ' + default if default else ''})")


def fraction(text: str) -> float:
    """argparse type: a share strictly between 0 and 1 (anything else is a usage error, exit status 2)."""
    return _share(text, "between 0 and 1 (both excluded)", lambda value: 0 < value < 1)


def fraction_or_zero(text: str) -> float:
    """argparse type: 0 (none), or a share below 1."""
    return _share(text, "0 (none), or between 0 and 1", lambda value: 0 <= value < 1)


def non_negative(text: str) -> float:
    """argparse type: a number, 0 or more."""
    return _share(text, "0 or more", lambda value: value >= 0)


def _share(text: str, expected: str, allowed) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not allowed(value):
        raise argparse.ArgumentTypeError(f"{text} is not {expected}")
    return value


# The `pneumo` command: each subcommand is a module's `main(argv)`, imported only when it runs.
SUBCOMMANDS = {
    "train": ("pneumo.training.train", "train an architecture on an image folder (resumable)"),
    "export": ("pneumo.training.export", "turn a finished training run into a model folder"),
    "evaluate": ("pneumo.training.evaluate", "score a model folder on a labeled folder and record the metrics"),
    "robustness": ("pneumo.training.robustness", "score a model folder under acquisition perturbations"),
    "ensemble": ("pneumo.training.ensemble", "build an ensemble folder, if it beats each member on validation"),
    "ood": ("pneumo.prediction.ood", "fit a model folder's out-of-distribution check"),
    "adapt": ("pneumo.site.adapt", "adapt a model to a site from its unlabeled X-rays"),
    "calibrate": ("pneumo.site.refit", "refit a model's calibration and threshold on a site's labeled X-rays"),
    "site-eval": ("pneumo.site.site_eval", "what a site gains from each adaptation, cross-fitted on its labels"),
    "hub": ("pneumo.hub.commands", "push or pull model repos; deploy the demo as a Space"),
    "model-folder": ("pneumo.hub.model_folder", "maintain model folders (upgrade old layouts)"),
    "results": ("pneumo.hub.results", "print the results tables of model folders (README, docs)"),
}


def main(argv=None) -> int:
    """`pneumo SUBCOMMAND ...` (also `python -m pneumo SUBCOMMAND ...`)."""
    import importlib

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="pneumo", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pneumonia detection on pediatric chest X-rays: the library's commands. The demo is "
                    "`python app.py`; folders are scored by `python batch_eval.py`.",
        epilog="subcommands:\n" + "\n".join(f"  {name:<14}{summary}" for name, (_, summary) in SUBCOMMANDS.items())
               + "\n\n`pneumo SUBCOMMAND --help` lists a subcommand's options.")
    parser.add_argument("subcommand", choices=SUBCOMMANDS, metavar="SUBCOMMAND", help="one of those listed below")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the subcommand's own arguments")
    if not argv:
        parser.print_help()
        return 2
    args = parser.parse_args(argv[:1])
    module = importlib.import_module(SUBCOMMANDS[args.subcommand][0])
    return module.main(argv[1:])
