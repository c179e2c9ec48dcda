"""`python -m minionize CMD ARGS...` is the `minionize` command."""

import sys

from .cli import main

sys.exit(main())
