"""A full disk under the json reporter: the minions keep acking and nothing is lost.

REPORTER_JSON_DIRECTORY is a 256 KiB tmpfs mounted for the test (root is
needed), filled up once a tenth of the parameters are done. A reporter that
cannot write must never fail, retry or slow down a parameter: every
parameter is done exactly once, and the minions exit 0.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import require
from tests.integration.backends import Backend

from .harness import Figures, Fleet, Sizes, count_done, done_program, push, wait_for

pytestmark = pytest.mark.integration


@contextmanager
def tiny_filesystem(path: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of `size` mounted on `path` for the duration."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "minionize-faults", str(path)],
        capture_output=True, text=True,
    )
    require(mounted.returncode == 0, f"cannot mount a tmpfs (root needed): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def fill(directory: Path) -> int:
    """Write zeros in `directory` until its file system is full; returns the bytes written."""
    written = 0
    descriptor = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            written += os.write(descriptor, b"\0" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(descriptor)
    return written


def test_a_full_disk_under_the_json_reporter_loses_nothing(
    backend: Backend, tmp_path: Path, sizes: Sizes, figures: list[Figures]
) -> None:
    params = [f"d{i}" for i in range(sizes.params)]
    records = tmp_path / "records"
    with tiny_filesystem(tmp_path / "reports") as reports:
        env = {**backend.env(tmp_path), "MINION_REPORTER": "json", "REPORTER_JSON_DIRECTORY": str(reports)}
        push(env, params)
        fleet = Fleet(backend, env, tmp_path, done_program(records, sizes.run_seconds), sizes.minions)
        started = time.monotonic()
        fleet.start()
        try:
            wait_for(lambda: len(count_done(records)) >= len(params) // 10, 60, "a tenth of the parameters done")
            fill(reports)
            wait_for(lambda: len(count_done(records)) == len(params), sizes.give_up, "every parameter done")
            all_done = time.monotonic() - started
            assert fleet.wait(sizes.give_up), "the minions did not exit by themselves"
            drained = time.monotonic() - started
        finally:
            fleet.stop()
        reported = any(path.stat().st_size for path in reports.glob("*.jsonl"))
    counts = count_done(records)
    result = Figures.of(backend.name, "full disk (json reporter)", fleet, params, counts,
                        all_done=all_done, drained=drained)
    figures.append(result)
    assert not fleet.failures(), fleet.failures()
    assert reported, "the json reporter wrote nothing before the disk was full"
    assert "json reporter: cannot write" in fleet.all_logs(), "the disk never looked full to the reporter"
    assert (result.lost, result.extra) == (0, 0), result.row()
