"""Fixtures of the fault-injection suite, and the table of figures printed at its end.

Every scenario appends a `Figures` row to `figures`; the table is printed in
the terminal summary (with or without `-s`, by tests/conftest.py, which also
gathers the rows of pytest-xdist workers) and written to FAULTS_REPORT when it
is set. FAULTS_* choose the sizes (see `harness.Sizes`): the
defaults are the CI-sized run, `scripts/faults` runs the full one.
"""

from __future__ import annotations

import pytest

from tests.integration.backends import backend_fixture, with_capability

from .harness import FIGURES, Figures, Sizes

backend = backend_fixture(
    with_capability("survives_kill"), scope="session",
    doc="Every engine whose queue gives a dead minion's parameters back (not the file engine).",
)


@pytest.fixture(scope="session")
def sizes() -> Sizes:
    return Sizes.from_env()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> list[Figures]:
    """Where a scenario puts its row of the table."""
    return request.config.stash.setdefault(FIGURES, [])
