"""A PostgreSQL server restart in the middle of a sweep loses nothing (the postgres engine).

The other brokers' restarts are test_storm.py's `test_broker_restart`, on
the backends of the contract suite. The postgres backend there uses the
machine's shared server, which a test may not restart: this one runs the
same scenario on a server of its own (PrivatePostgresBackend), crashed
(`pg_ctl stop -m immediate`, no checkpoint) and started again when a
quarter of the parameters are done, so that the restart replays the WAL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.backends.postgres import PrivatePostgresBackend

from .harness import Figures, Sizes
from .test_storm import Restarter, check_nothing_lost, run_scenario

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def private() -> Iterator[PrivatePostgresBackend]:
    backend = PrivatePostgresBackend()
    backend.start()
    yield backend
    backend.stop()


def test_server_restart(private: PrivatePostgresBackend, tmp_path: Path, sizes: Sizes, figures: list[Figures]) -> None:
    restarter = Restarter(private, sizes.params)
    result, fleet = run_scenario(private, tmp_path, sizes, "server crash and restart", restarter, figures)
    assert restarter.restarted, "the run ended before the server could be restarted"
    check_nothing_lost(private, result, fleet, tmp_path)
