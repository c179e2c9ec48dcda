"""A warning for a misspelled minionize variable, which nothing would read otherwise.

The names minionize knows are those its own modules mention (the settings,
each engine's and reporter's docstring and code), so that a new engine's
variables are known without a list to keep up to date.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from .registry import VARIABLE_PREFIXES

#: The prefixes of minionize's own variables (DOCKER_ and PUBSUB_ belong to client libraries).
PREFIXES = VARIABLE_PREFIXES
_NAME = re.compile(rb"\b((?:" + "|".join(p[:-1] for p in PREFIXES).encode() + rb")_[A-Z0-9_]*[A-Z0-9])\b")
#: Set by minionize for each run (MINION_PARAM_<KEY>), or by the user's own program.
_FREE = ("MINION_PARAM_",)
#: How alike a name must be to a known one to be taken for a misspelling of it.
_CUTOFF = 0.85


def known_variables() -> frozenset[str]:
    """Every variable named in minionize's own source files."""
    names: set[str] = set()
    for path in Path(__file__).resolve().parent.rglob("*.py"):
        names.update(match.decode() for match in _NAME.findall(path.read_bytes()))
    return frozenset(names)


def misspellings(environ: Mapping[str, str]) -> list[str]:
    """One warning per variable that looks like a misspelling of a known one."""
    candidates = sorted(n for n in environ if n.startswith(PREFIXES) and not n.startswith(_FREE))
    if not candidates:
        return []
    import difflib

    known = known_variables()
    warnings = []
    for name in candidates:
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=_CUTOFF)
        if close:
            warnings.append(f"{name} is not a minionize variable (ignored): did you mean {close[0]}?")
    return warnings
