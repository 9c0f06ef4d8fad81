"""`python -m pneumo SUBCOMMAND ...`: the same as the `pneumo` console script."""

import sys

from .cli import main

sys.exit(main())
