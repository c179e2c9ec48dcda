"""The execo engine's fast paths, each against what it must keep: plain execo's view and a killed minion.

- An ack leaves its parameter in `inprogress`, the next write drops it: no
  minion runs it again meanwhile, and nothing stays there once the minion
  ends, or once another minion looks after a kill.
- `inprogress` is written by exchanging a temporary with it (renameat2),
  or renamed over it where the exchange is refused (NFS): both leave the
  same sweep, and no temporary once the minion is closed.
- A minion that runs the last parameters does not wait between two looks
  when nothing can come back but what it runs itself.
- Several parameters are taken under one lock, in one write of
  `inprogress` (one per free slot): a minion killed right after holds them
  under their leases, and they come back once these are over.
- An ack reads only what `done` gained (cutting off a torn record first),
  neither the journal nor `inprogress`: its record is read by plain execo,
  and a minion killed right after it leaves the parameter done.
- A take's lease (the minion's lease file, rewritten in place) is written
  once the sweep's lock is let go; one that cannot be written gives its
  parameters back.
- What the fleet acked is read from `done` before the sweep's lock is
  taken: under it, only what was appended meanwhile. Read so, a record
  still being appended is left whole for the next read, never cut.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from execo_engine.sweep import ParamSweeper

from minionize.engines import execo, sweepfiles, sweepleases
from minionize.engines.execo import ExecoEngine
from tests.unit.sweeps import Later, leased, make_sweep, on_disk_in_progress


def opened(path: Path) -> ExecoEngine:
    engine = ExecoEngine(str(path), 60)
    engine.open()
    return engine


def test_an_acked_parameter_is_dropped_from_inprogress_by_the_next_take(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", ["a", "b", "c"])
    minion, other = opened(d), opened(d)
    first = minion.next(0)
    assert first is not None
    minion.ack(first)
    assert first.param in on_disk_in_progress(d)  # not written again by the ack
    assert first.param in ParamSweeper(str(d)).get_done()
    assert first.param not in {m.param for m in iter(lambda: other.next(0), None)}
    second = minion.next(0)
    assert second is None  # `other` took the rest
    assert minion.drained() is False  # `other` holds two
    assert first.param not in on_disk_in_progress(d)  # dropped by `drained`, the next write


def test_the_acks_left_in_inprogress_are_dropped_at_close_and_plain_execo_sees_them_done(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", range(4))
    minion = opened(d)
    taken = [minion.next(0) for _ in range(4)]
    for message in taken:
        assert message is not None
        minion.ack(message)
    assert on_disk_in_progress(d)  # the last ack's parameter at least
    minion.close()
    reader = ParamSweeper(str(d))
    assert sorted(reader.get_done()) == [0, 1, 2, 3]
    assert not reader.get_inprogress() and not reader.get_remaining()
    assert not [p.name for p in d.iterdir() if p.name.startswith(".inprogress.")]


KILLED_AFTER_ACKS = textwrap.dedent("""
    import os, signal, sys
    from minionize.engines.execo import ExecoEngine
    engine = ExecoEngine(sys.argv[1], 60)
    engine.open()
    for _ in range(3):
        engine.ack(engine.next(0))
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_minion_killed_after_its_acks_leaves_them_done_and_nothing_stranded(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", range(6))
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_ACKS, str(d)], capture_output=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    acked = set(ParamSweeper(str(d)).get_done())
    assert len(acked) == 3
    assert on_disk_in_progress(d) & acked  # killed before any write took them out
    fresh = opened(d)
    ran = set()
    while (message := fresh.next(0)) is not None:
        ran.add(message.param)
        fresh.ack(message)
    assert ran == set(range(6)) - acked  # none of the acked ones again
    assert fresh.drained()
    reader = ParamSweeper(str(d))
    assert sorted(reader.get_done()) == list(range(6)) and not reader.get_inprogress()


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "rename"])
def test_inprogress_is_the_same_written_by_exchange_or_by_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:
        monkeypatch.setattr(sweepfiles, "_renameat2", False)  # as on NFS, which refuses the exchange
    d = make_sweep(tmp_path / "s", ["a", "b", "c"])
    a, b = opened(d), opened(d)
    held = [a.next(0), b.next(0)]
    assert None not in held
    assert set(ParamSweeper(str(d)).get_inprogress()) == {m.param for m in held if m}
    b.nack(held[1])  # written again at once, without the parameter
    assert set(ParamSweeper(str(d)).get_inprogress()) == {held[0].param}
    for engine in (a, b):
        engine.close()
    assert not [p.name for p in d.iterdir() if p.name.startswith(".inprogress.")]


def test_an_exchange_refused_by_the_file_system_falls_back_to_a_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def refused(*args: object) -> int:
        calls.append(args)
        import ctypes

        ctypes.set_errno(22)  # EINVAL: what NFS answers
        return -1

    monkeypatch.setattr(sweepfiles, "_renameat2", refused)
    path, temporary = tmp_path / "file", tmp_path / ".file.tmp"
    path.write_bytes(b"old")
    sweepfiles.swap(path, b"new", temporary)
    sweepfiles.swap(path, b"newer", temporary)
    assert path.read_bytes() == b"newer" and not temporary.exists()
    assert len(calls) == 1  # refused once: not asked again


def test_a_minion_running_the_last_parameters_does_not_wait_for_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(execo.time, "sleep", slept.append)
    d = make_sweep(tmp_path / "s", ["a", "b"])
    minion = opened(d)
    assert minion.next(0) is not None and minion.next(0) is not None
    assert minion.next(5) is None  # only its own runs may come back: it says so at once
    assert slept == []
    other = opened(d)
    assert other.next(5) is None  # another minion's runs may come back: a pause between two looks
    assert slept == [0.05]


def test_swap_leaves_the_temporary_holding_the_previous_content(tmp_path: Path) -> None:
    """The exchange keeps both files: the next write reuses the old one (no new file per write)."""
    if sweepfiles._renameat2 is False:  # pragma: no cover - a system without renameat2
        pytest.skip("no renameat2 here")
    path, temporary = tmp_path / "file", tmp_path / ".file.tmp"
    path.write_bytes(b"first")
    sweepfiles.swap(path, b"second", temporary)
    if sweepfiles._renameat2 is False:
        pytest.skip(f"the file system of {tmp_path} refuses RENAME_EXCHANGE")
    inode = os.stat(temporary).st_ino
    assert path.read_bytes() == b"second" and temporary.read_bytes() == b"first"
    sweepfiles.swap(path, b"third", temporary)
    assert os.stat(path).st_ino == inode and path.read_bytes() == b"third"


def test_several_parameters_are_taken_in_one_write_never_more_than_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_sweep(tmp_path / "s", range(5))
    writes = []
    swap = sweepfiles.swap
    monkeypatch.setattr(sweepfiles, "swap", lambda *args: writes.append(args[0]) or swap(*args))
    minion = opened(d)
    taken = minion.next_many(3, 0)
    assert len(taken) == 3 and len(writes) == 1
    assert set(ParamSweeper(str(d)).get_inprogress()) == {m.param for m in taken}
    assert len({m.id for m in taken}) == 3 and all(m.attempt == 1 for m in taken)
    assert {m.id for m in taken} == leased(d)
    rest = minion.next_many(3, 0)
    assert len(rest) == 2 and not {m.param for m in rest} & {m.param for m in taken}
    assert minion.next_many(3, 0) == []


KILLED_AFTER_A_BATCH = textwrap.dedent("""
    import os, signal, sys
    from minionize.engines.execo import ExecoEngine
    engine = ExecoEngine(sys.argv[1], 60)
    engine.open()
    assert len(engine.next_many(3, 0)) == 3
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_batch_held_by_a_killed_minion_comes_back_after_its_leases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execo, "_RECLAIM_EVERY", 0.0)
    d = make_sweep(tmp_path / "s", range(4))
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_A_BATCH, str(d)], capture_output=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    held = set(ParamSweeper(str(d)).get_inprogress())
    assert len(held) == 3
    fresh = opened(d)
    first = fresh.next_many(4, 0)
    assert [m.param for m in first] == list(set(range(4)) - held)  # not what the dead minion leased
    fresh.ack(first[0])
    late = ExecoEngine(str(d), 60, clock=Later(81))  # past the leases and their margin
    late.open()
    back = late.next_many(4, 0)
    assert {m.param for m in back} == held and all(m.attempt == 2 and m.reclaimed for m in back)
    for message in back:
        late.ack(message)
    assert late.drained()
    assert sorted(ParamSweeper(str(d)).get_done()) == [0, 1, 2, 3]


def _torn_record_at_the_end_of_done(path: Path) -> None:
    """What a writer leaves when it dies in an append whose cut-back failed."""
    with open(path / "done", "ab") as done:
        done.write(pickle.dumps("never whole", protocol=4)[:7])


def test_an_ack_reads_neither_the_journal_nor_inprogress(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", ["a", "b", "c"])
    minion = opened(d)
    first, second = minion.next(0), minion.next(0)
    assert first is not None and second is not None
    journal, inprogress = d / ".minionize" / "journal", d / "inprogress"
    kept = inprogress.read_bytes()
    journal.unlink(missing_ok=True)
    inprogress.unlink()
    journal.mkdir()  # unreadable as files: any call that reads them fails
    inprogress.mkdir()
    minion.ack(first)
    with pytest.raises(IsADirectoryError):
        minion.nack(second)  # which reads them
    journal.rmdir()
    inprogress.rmdir()
    inprogress.write_bytes(kept)
    assert first.param in ParamSweeper(str(d)).get_done()
    minion.ack(second)
    assert minion.next(0) is not None and minion.next(0) is None
    assert first.param not in on_disk_in_progress(d)  # dropped by the take


def test_an_ack_after_a_torn_record_in_done_is_read_by_plain_execo(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", ["a", "b"])
    minion = opened(d)
    message = minion.next(0)
    assert message is not None
    _torn_record_at_the_end_of_done(d)
    minion.ack(message)
    assert ParamSweeper(str(d)).get_done() == {message.param}


KILLED_IN_AN_ACK = textwrap.dedent("""
    import os, pickle, signal, sys
    from minionize.engines import sweepfiles
    from minionize.engines.execo import ExecoEngine
    engine = ExecoEngine(sys.argv[1], 60)
    engine.open()
    acked, held = engine.next(0), engine.next(0)
    with open(os.path.join(sys.argv[1], "done"), "ab") as done:
        done.write(pickle.dumps("never whole", protocol=4)[:7])  # another writer's torn record
    sweepfiles.sync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # killed after the record, at its sync
    print(acked.param, held.param, flush=True)
    engine.ack(acked)
""")


def test_a_minion_killed_in_an_ack_after_its_record_leaves_the_parameter_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execo, "_RECLAIM_EVERY", 0.0)
    d = make_sweep(tmp_path / "s", ["a", "b"])
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_AN_ACK, str(d)], capture_output=True, timeout=60,
                            text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    acked, held = killed.stdout.split()
    assert ParamSweeper(str(d)).get_done() == {acked}
    assert execo.param_key(acked) in leased(d)  # killed before the lease was written again
    assert opened(d).next(0) is None  # one done, one under its lease
    late = ExecoEngine(str(d), 60, clock=Later(81))  # past the lease of `held` and its margin
    late.open()
    back = late.next_many(3, 0)
    assert [m.param for m in back] == [held]  # not the acked one, whose lease is still there
    late.ack(back[0])
    assert late.drained()
    assert ParamSweeper(str(d)).get_done() == {"a", "b"} and not ParamSweeper(str(d)).get_inprogress()


LOCK_PROBE = "import fcntl, sys; f = open(sys.argv[1], 'ab'); fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)"


def test_a_takes_leases_are_created_once_the_sweeps_lock_is_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease is written after the take, one write for the parameters taken: a fleet does not wait for it."""
    d = make_sweep(tmp_path / "s", range(4))
    minion = opened(d)
    free = []
    rewrite = sweepfiles.rewrite

    def probed(fd: int, data: bytes) -> None:
        probe = subprocess.run([sys.executable, "-c", LOCK_PROBE, str(d / "done")], capture_output=True)
        free.append(probe.returncode == 0)
        rewrite(fd, data)

    monkeypatch.setattr(sweepfiles, "rewrite", probed)
    taken = minion.next_many(2, 0)
    assert len(taken) == 2 and free == [True]
    assert {m.id for m in taken} == leased(d)
    assert set(ParamSweeper(str(d)).get_inprogress()) == {m.param for m in taken}


def test_a_lease_that_cannot_be_written_gives_the_parameters_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_sweep(tmp_path / "s", range(3))
    minion = opened(d)
    calls = []

    def full(fd: int, data: bytes) -> None:
        calls.append(fd)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sweepfiles, "rewrite", full)
    with pytest.raises(OSError):
        minion.next_many(2, 0)
    monkeypatch.undo()
    assert len(calls) == 1 and on_disk_in_progress(d) == set()
    assert not leased(d)
    again = opened(d).next_many(5, 0)
    assert {m.param for m in again} == {0, 1, 2} and {m.attempt for m in again} == {1}  # none stranded or counted
    assert minion.drained() is False and minion.remaining() == 3


def test_a_lease_per_parameter_of_older_minionize_is_still_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execo, "_RECLAIM_EVERY", 0.0)
    d = make_sweep(tmp_path / "s", ["old", "new"])
    (d / "inprogress").write_bytes(pickle.dumps({"old"}, protocol=4))
    lease = d / ".minionize" / "leases" / execo.param_key("old")
    lease.parent.mkdir(parents=True)
    lease.write_text(json.dumps({"minion": "old-host:1", "expires": time.time() + 60}))
    assert execo.param_key("old") in leased(d)
    minion = opened(d)
    taken = minion.next_many(2, 0)
    assert [m.param for m in taken] == ["new"]  # "old" is under its lease
    minion.ack(taken[0])
    late = ExecoEngine(str(d), 60, clock=Later(81))
    late.open()
    back = late.next_many(2, 0)
    assert [m.param for m in back] == ["old"] and back[0].reclaimed
    assert not lease.exists()


def test_a_minion_whose_lease_file_was_deleted_writes_it_anew(tmp_path: Path) -> None:
    """A minion paused past its lease (SIGSTOP, a frozen VM) finds its file deleted by the next minion to
    open the sweep: its next write must not go to the deleted file, which nobody reads."""
    d = make_sweep(tmp_path / "s", range(4))
    minion = opened(d)
    first = minion.next(0)
    assert first is not None and leased(d) == {first.id}
    for path in (d / ".minionize" / "leases").iterdir():
        path.unlink()
    assert not leased(d)
    minion.extend([first])
    assert leased(d) == {first.id}
    second = minion.next(0)
    assert second is not None and leased(d) == {first.id, second.id}


def test_what_the_fleet_acked_is_read_before_the_sweeps_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_sweep(tmp_path / "s", range(10))
    minion, other = opened(d), opened(d)
    acked = []
    for _ in range(5):
        message = other.next(0)
        assert message is not None
        other.ack(message)  # one record each (runs of unknown length: written at once)
        acked.append(message.param)
    read_at_lock: list[int] = []
    lockf = fcntl.lockf

    def lock(fd: int, operation: int, *args: int) -> None:
        if operation & fcntl.LOCK_EX:
            read_at_lock.append(minion._sweep.done_pos)
        lockf(fd, operation, *args)

    monkeypatch.setattr(fcntl, "lockf", lock)
    taken = minion.next(0)
    assert taken is not None and taken.param not in acked
    assert all(param in minion._sweep.done for param in acked)
    assert read_at_lock == [(d / "done").stat().st_size]  # all of them before the lock, none again under it


_HOLDER = textwrap.dedent("""
    import fcntl, os, pickle, sys
    done = os.open(sys.argv[1] + "/done", os.O_RDWR | os.O_APPEND)
    line = os.open(sys.argv[1] + "/.minionize/line", os.O_RDWR | os.O_CREAT)
    fcntl.lockf(done, fcntl.LOCK_EX)
    fcntl.lockf(line, fcntl.LOCK_EX)
    print("held", flush=True)
    sys.stdin.readline()
    os.write(done, b"".join(pickle.dumps(p, protocol=4) for p in range(5)))  # what a fleet acks meanwhile
    os.close(line)  # the next in line: it catches up while this one still holds the sweep
    sys.stdin.readline()
    os.close(done)
""")


def _waiting_for_a_lock() -> bool:
    return "->" in Path("/proc/locks").read_text()


def test_a_minion_waiting_for_a_busy_sweep_catches_up_in_line_not_under_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy sweep: the minions wait in line (`.minionize/line`) for its lock; the first in line reads
    what the fleet acked while the lock's holder works, and only what came after under the lock (before,
    128 minions each read about a hundred records under it: the lock, not the cores, bounded the fleet)."""
    d = make_sweep(tmp_path / "s", range(10))
    minion = opened(d)
    acked = (d / "done").stat().st_size + len(b"".join(pickle.dumps(p, protocol=4) for p in range(5)))
    read_at_lock: list[int] = []
    lockf = fcntl.lockf

    def lock(fd: int, operation: int, *args: int) -> None:
        if operation == fcntl.LOCK_EX and os.readlink(f"/proc/self/fd/{fd}").endswith("done"):
            read_at_lock.append(minion._sweep.done_pos)  # a minion blocking on the sweep's lock
        lockf(fd, operation, *args)

    monkeypatch.setattr(fcntl, "lockf", lock)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(d)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "held\n"
        taken: list[object] = []
        thread = threading.Thread(target=lambda: taken.append(minion.next(0)))
        thread.start()
        deadline = time.monotonic() + 10
        while not _waiting_for_a_lock() and time.monotonic() < deadline:
            time.sleep(0.01)
        holder.stdin.write("append\n")
        holder.stdin.flush()
        while minion._sweep.done_pos < acked and time.monotonic() < deadline:
            time.sleep(0.01)
        holder.stdin.write("release\n")
        holder.stdin.flush()
        thread.join(10)
    finally:
        holder.kill()
        holder.wait()
    assert read_at_lock == [acked], "the records acked while the minion waited were read under the lock"
    [message] = taken
    assert message is not None and message.param not in range(5)


def test_a_record_being_appended_is_left_whole_by_a_read_without_the_lock(tmp_path: Path) -> None:
    d = make_sweep(tmp_path / "s", ["a", "b"])
    state = opened(d)._sweep
    record = pickle.dumps("a", protocol=4)
    with open(d / "done", "ab") as writer:
        writer.write(record[:5])  # a minion's append, half written
        writer.flush()
        done = os.open(d / "done", os.O_RDWR)
        try:
            state.scan_done(done, cut=False)
            assert (d / "done").stat().st_size == 5 and state.done_pos == 0
            writer.write(record[5:])
            writer.flush()
            state.scan_done(done, cut=False)
        finally:
            os.close(done)
    assert state.done_pos == len(record) and "a" in state.done


def test_a_reclaim_reads_no_lease_before_the_earliest_it_saw_can_have_run_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle minion looks for dead minions' parameters at each look; while every lease it saw is still
    good (a lease period and a third), it reads none of them: a fleet's idle minions would read every lease
    file of the fleet each second."""
    monkeypatch.setattr(execo, "_RECLAIM_EVERY", 0.0)
    d = make_sweep(tmp_path / "s", ["a", "b"])
    holder = opened(d)
    held = holder.next_many(2, 0)
    assert len(held) == 2
    now = [time.time()]
    idle = ExecoEngine(str(d), 60, clock=lambda: now[0])
    idle.open()
    reads = []
    expiries = sweepleases.expiries
    monkeypatch.setattr(sweepleases, "expiries", lambda directory: reads.append(now[0]) or expiries(directory))
    assert idle.next(0) is None
    assert len(reads) == 1
    now[0] += 75  # the holder's lease ran out 15 s ago, within the margin of a third
    assert idle.next(0) is None
    assert len(reads) == 1
    now[0] += 10  # and the margin: its parameters come back
    back = idle.next_many(2, 0)
    assert sorted(m.param for m in back) == ["a", "b"] and len(reads) == 2
