"""`python -m minionize CMD ARGS...` is the `minionize` command."""

import sys

from .boot import minionize

sys.exit(minionize())
