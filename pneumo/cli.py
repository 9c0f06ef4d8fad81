"""What every `python -m pneumo.X` command does with an error its user can act on: one line, exit status 1."""

from __future__ import annotations

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
