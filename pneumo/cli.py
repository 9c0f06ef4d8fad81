"""What every `python -m pneumo.X` command does with an error its user can act on: one line, exit status 1;
and the argument types the commands share."""

from __future__ import annotations

import argparse
import functools
import sys

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


def fraction(text: str) -> float:
    """argparse type: a share strictly between 0 and 1 (anything else is a usage error, exit status 2)."""
    return _share(text, "between 0 and 1 (both excluded)", lambda value: 0 < value < 1)


def fraction_or_zero(text: str) -> float:
    """argparse type: 0 (none), or a share below 1."""
    return _share(text, "0 (none), or between 0 and 1", lambda value: 0 <= value < 1)


def _share(text: str, expected: str, allowed) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not allowed(value):
        raise argparse.ArgumentTypeError(f"{text} is not {expected}")
    return value
