"""The lease files of an execo sweep (minionize/engines/sweepleases.py), read as whatever a minion, a kill or
a user may leave in them: a torn or strange file is no lease, never an error."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from minionize.engines import sweepleases
from minionize.engines.sweepleases import MinionLease


@pytest.mark.parametrize(
    "content, read",
    [
        ('{"minion": "h:1", "expires": 5, "keys": ["a", "b"]}', (5.0, ["a", "b"])),
        ('{"minion": "h:1", "expires": 5}', (5.0, [])),  # older minionize: one parameter, named by the file
        ('{"expires": "7.5", "keys": ["a", 3, null, ["b"]]}', (7.5, ["a"])),
        ('{"expires": 5, "keys": "abc"}', (5.0, [])),
        ('{"minion": "h:1", "expires": 5, "keys": ["a"', None),  # torn
        ("", None),
        ("[1, 2]", None),
        ('"expires"', None),
        ('{"keys": ["a"]}', None),
        ('{"expires": "soon"}', None),
        ('{"expires": [1]}', None),
        ("\udcff", None),
    ],
)
def test_a_lease_file_reads_as_a_lease_or_as_none(tmp_path: Path, content: str, read: object) -> None:
    path = tmp_path / "minion.h_1_aa"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    assert sweepleases.read(str(path)) == read


def test_a_parameter_named_by_two_leases_runs_out_with_the_later(tmp_path: Path) -> None:
    (tmp_path / "minion.a").write_text(json.dumps({"expires": 10, "keys": ["k1", "k2"]}))
    (tmp_path / "minion.b").write_text(json.dumps({"expires": 20, "keys": ["k2"]}))
    (tmp_path / "k3").write_text(json.dumps({"expires": 30}))  # older minionize's
    (tmp_path / "minion.torn").write_text('{"expires": 40, "keys": ["k4"')
    (tmp_path / ".k5.h_1_aa").write_text(json.dumps({"expires": 50}))  # a temporary
    assert sweepleases.expiries(str(tmp_path)) == {"k1": 10, "k2": 20, "k3": 30}
    assert sweepleases.expiries(str(tmp_path / "none")) == {}


def test_only_run_out_lease_files_naming_nothing_in_progress_are_pruned(tmp_path: Path) -> None:
    now, lease = 1000.0, 60.0
    files = {
        "minion.run-out": {"expires": now - 30, "keys": ["done"]},
        "minion.run-out-holding": {"expires": now - 30, "keys": ["running"]},
        "minion.in-the-margin": {"expires": now - 10, "keys": []},
        "minion.live": {"expires": now + 50, "keys": []},
        "minion.mine": {"expires": now - 100, "keys": []},
    }
    for name, record in files.items():
        (tmp_path / name).write_text(json.dumps(record))
        written = record["expires"] - lease  # as its minion wrote it
        os.utime(tmp_path / name, (written, written))
    # Rewritten within a lease (its clock behind the file server's): not even read.
    (tmp_path / "minion.rewritten").write_text(json.dumps({"expires": now - 30, "keys": []}))
    os.utime(tmp_path / "minion.rewritten", (now - 5, now - 5))
    (tmp_path / "k1").write_text(json.dumps({"expires": now - 100}))  # older minionize's: not these
    old_torn, fresh_torn = tmp_path / "minion.old-torn", tmp_path / "minion.fresh-torn"
    old_torn.write_text("{")
    fresh_torn.write_text("{")
    os.utime(old_torn, (now - lease - 1, now - lease - 1))
    os.utime(fresh_torn, (now - 10, now - 10))
    sweepleases.prune(str(tmp_path), now, lease, lambda: {"running"}, keep=str(tmp_path / "minion.mine"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "k1", "minion.fresh-torn", "minion.in-the-margin", "minion.live", "minion.mine", "minion.rewritten",
        "minion.run-out-holding"]


def test_a_minions_lease_is_rewritten_in_place_and_anew_once_deleted(tmp_path: Path) -> None:
    lease = MinionLease(str(tmp_path), "h_1_aa", "h:1:aa", 60, time.time)
    assert not lease.written
    lease.write(["a", "b", "c"])
    inode = os.stat(lease.path).st_ino
    lease.write(["a"])  # shorter: nothing of the longer one left
    assert sweepleases.read(lease.path) == (lease.until, ["a"]) and os.stat(lease.path).st_ino == inode
    os.unlink(lease.path)  # by a minion that took it for a dead one's
    lease.write(["b"])
    assert sweepleases.read(lease.path) == (lease.until, ["b"])
    lease.remove()
    assert not os.path.exists(lease.path) and not lease.written
