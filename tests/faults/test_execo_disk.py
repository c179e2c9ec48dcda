"""A full disk under the execo sweep itself, with a minion killed while it is full.

The sweep directory (EXECO_PERSISTENCE_DIR) is on a 256 KiB tmpfs mounted
for the test (root is needed). Once a tenth of the parameters are done, the
tmpfs is filled up: every write of the minions (a lease, `inprogress`,
`done`, the journal) fails with ENOSPC, and a minion is killed with its runs
(then replaced), as a node dies. Two seconds later the filler is deleted.
No parameter may be stranded by a write that failed: every one is done, by
minions that exit 0 by themselves once the sweep is drained; a fresh minion
started then finds nothing to run; no temporary file is left behind; plain
execo reads the directory.

A write that failed may cost a run: an ack that met the full disk leaves its
parameter to run again once its lease is over (the extra runs of the table).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from execo_engine.sweep import ParamSweeper

from tests.integration.backends.execo import ExecoBackend

from .harness import Figures, Fleet, Sizes, count_done, done_program, kill_node, push, wait_for
from .test_full_disk import fill, tiny_filesystem

pytestmark = pytest.mark.integration
FULL_FOR = 2.0


def test_a_full_sweep_disk_and_a_kill_strand_nothing(tmp_path: Path, sizes: Sizes, figures: list[Figures]) -> None:
    backend = ExecoBackend()
    params = [f"x{i}" for i in range(sizes.params)]
    records = tmp_path / "records"
    with tiny_filesystem(tmp_path / "disk") as disk:
        env = {**backend.env(disk), **backend.lease_env()}
        push(env, params)
        fleet = Fleet(backend, env, tmp_path, done_program(records, sizes.run_seconds), sizes.minions)
        started = time.monotonic()
        fleet.start()
        try:
            wait_for(lambda: len(count_done(records)) >= len(params) // 10, 60, "a tenth of the parameters done")
            fill(disk)
            runs_killed = kill_node(fleet.minions[0])
            fleet.killed.add(fleet.minions[0].pid)
            fleet.spawn()
            time.sleep(FULL_FOR)
            (disk / "filler").unlink()
            wait_for(lambda: len(count_done(records)) == len(params), sizes.give_up, "every parameter done")
            all_done = time.monotonic() - started
            assert fleet.wait(sizes.give_up), "the minions did not exit by themselves"
            drained = time.monotonic() - started
        finally:
            fleet.stop()
        late = Fleet(backend, env, tmp_path, done_program(tmp_path / "late", 0), name="late").start()
        assert late.wait(60), "a minion started after the sweep was drained did not exit by itself"
        sweep = Path(env["EXECO_PERSISTENCE_DIR"])
        leftovers = [p.name for p in sweep.rglob("*") if p.name.startswith(".") and p.name != ".minionize"]
        reader = ParamSweeper(str(sweep))
        execo_done, execo_busy = set(reader.get_done()), reader.get_inprogress()
    counts = count_done(records)
    result = Figures.of(backend.name, "full sweep disk + a kill", fleet, params, counts, kills=1,
                        runs_killed=runs_killed, all_done=all_done, drained=drained)
    figures.append(result)
    assert not fleet.failures() and not late.failures(), fleet.failures() + late.failures()
    assert "No space left on device" in fleet.all_logs(), "the disk never looked full to the minions"
    assert result.lost == 0, result.row()
    assert not count_done(tmp_path / "late"), "the late minion ran something: the sweep was not drained"
    assert not leftovers, f"temporaries left behind: {leftovers}"
    assert (execo_done, execo_busy) == (set(params), set())
