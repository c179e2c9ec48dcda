"""The files of an execo sweep, written so that a fault never leaves them half-written.

Every change to a sweep directory goes through the functions here, and
through this module's `os` alone (the storage tests wrap it to inject
ENOSPC, EIO or a kill at each call):

- a whole file (`inprogress`, `sweeps`, a lease) is replaced by writing a
  temporary beside it, then renaming it over the old one (or, for
  `inprogress`, exchanging the two): readers on any host see the old file or
  the new one, whole, never an empty or torn one, and a failed write leaves
  the old one in place;
- an append-only file (`done`, the journal) grows by one pickle per write; a
  write that fails is cut off again, so that the next record never lands
  after a torn one.

fsync is called where a lost write would break the sweep after a crash of
the machine or the file server (see each function), not more: on NFS it is
also where a full disk or quota (ENOSPC, EDQUOT) shows up, so a write that
is synced is known to be stored before the next one is made.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ..errors import ConfigError

#: Pickle protocol of every record: what execo writes and reads from Python 3.4 on.
PROTOCOL = 4
#: What a torn or unreadable pickle raises (anything else, a missing class, is not a torn record).
TORN = (EOFError, pickle.UnpicklingError, ValueError, IndexError, TypeError)
#: What unpickling a parameter raises when its class cannot be imported here (see `ForeignParameter`).
FOREIGN = (AttributeError, ImportError)


class ForeignParameter(ConfigError):
    """The sweep holds a parameter of a class this minion cannot import: the program that wrote the sweep
    pickled an object of its own (a class of its `__main__`, of a module not installed here). No minion
    with this environment can run it, and waiting does not help: a configuration error (exit code 2)."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(
            "EXECO_PERSISTENCE_DIR", None,
            f"the sweep holds a parameter this minion cannot unpickle ({type(exc).__name__}: {exc}): "
            "make parameters of plain values (numbers, strings, tuples, lists, dicts, sets), or install "
            "the module of their class where the minions run (PYTHONPATH)")

    def __str__(self) -> str:
        return f"EXECO_PERSISTENCE_DIR: {self.accepted}"


def loads(data: Union[bytes, memoryview]) -> Any:
    """`pickle.loads` of a record of the sweep; a class that cannot be imported is a ForeignParameter."""
    try:
        return pickle.loads(data)
    except FOREIGN as exc:
        raise ForeignParameter(exc) from None

StrPath = Union[str, Path]
_FRAME = pickle.FRAME


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def replace(path: StrPath, data: bytes, temporary: StrPath, sync: bool) -> None:
    """Make `path` hold `data`, whole or not at all.

    `sync` fsyncs the temporary before the rename, without which a crash of
    the machine may leave the new name on an empty file. The directory is not
    synced: a rename lost with the machine leaves the previous file, a state
    the sweep recovers from like any other (see the execo engine).
    """
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        try:
            _write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError:
        remove(temporary)
        raise


def swap(path: StrPath, data: bytes, temporary: StrPath) -> None:
    """Make `path` hold `data`, whole or not at all, like `replace` but without a new file each time.

    The temporary is overwritten in place, then exchanged with `path`
    (renameat2's RENAME_EXCHANGE), so that the next call overwrites the old
    `path`: ext4 writes a file out at once, as fsync would, when it is
    truncated to nothing or renamed over another, which made three quarters
    of the time of a short parameter. Where the exchange is not supported
    (NFS, other systems), or `path` does not exist yet, the temporary is
    renamed over `path` as by `replace`. Not synced: a crash of the machine
    may leave `path` empty, torn or as it was before (the execo engine
    recovers from each).
    """
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        try:
            _write_all(fd, data)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
        if not _exchange(temporary, path):
            os.replace(temporary, path)
    except OSError:
        remove(temporary)
        raise


def open_writable(path: StrPath) -> int:
    """A descriptor to rewrite `path` in place (`rewrite`), created if need be."""
    return os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)


def rewrite(fd: int, data: bytes) -> None:
    """Overwrite a small file in place, from its start, for a reader who takes a torn one (read while
    written, or a kill in the write) as none: no name created or renamed, which costs more than the
    write itself (a lease rewritten at every take)."""
    view, offset = memoryview(data), 0
    while offset < len(data):
        offset += os.pwrite(fd, view[offset:], offset)
    os.ftruncate(fd, len(data))


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_renameat2: Any = None  # libc's renameat2, or False where there is none or the file system refuses it


def prepare_exchange() -> None:
    """Find libc's renameat2, once: made by a minion opening a sweep, before it takes the sweep's lock (a
    few ms, which a fleet starting at once would wait for, one minion after another)."""
    global _renameat2
    if _renameat2 is None:
        try:
            import ctypes  # here: 2 ms of the start of every minion (and of every command) otherwise

            _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
        except (OSError, AttributeError):
            _renameat2 = False


def _exchange(first: StrPath, second: StrPath) -> bool:
    """Swap two names in one step; False when this system cannot, or `second` is not there."""
    global _renameat2
    prepare_exchange()
    if _renameat2 is False:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    import ctypes

    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        _renameat2 = False  # not on this file system (NFS) or kernel: rename from now on
        return False
    if code == errno.ENOENT:
        return False
    raise OSError(code, os.strerror(code), os.fspath(second))


def remove(path: StrPath) -> bool:
    """Delete `path` if it is there; False when it could not be (best effort: callers tolerate leftovers)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def open_appendable(path: StrPath) -> int:
    """A descriptor to read `path` and append to it (created as execo creates it, mode 0666 less the umask)."""
    return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)


def append(fd: int, record: Any, sync: bool = True) -> None:
    """Append one pickled record to a file opened by `open_appendable`, and fsync it (unless not `sync`).

    The caller holds the sweep's lock, so nobody appends in between. The sync
    makes a failure or a nack (the journal) durable before the parameter
    leaves `inprogress`; an ack's record (`done`) is synced by `sync` once
    the lock is free. On failure the file is cut back to its size before the
    write.
    """
    append_all(fd, [record], sync)


def append_all(fd: int, records: list[Any], sync: bool = True) -> None:
    """`append`, of several records in one write."""
    append_bytes(fd, b"".join(pickle.dumps(record, protocol=PROTOCOL) for record in records), sync)


def append_bytes(fd: int, data: bytes, sync: bool = True) -> int:
    """`append` of records already pickled; returns where they start."""
    size = os.fstat(fd).st_size
    try:
        _write_all(fd, data)
        if sync:
            os.fsync(fd)
    except OSError:
        # Should the cut fail too, the torn record is cut off by the next reader (`read_appended`).
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise
    return size


def sync(fd: int) -> None:
    """fsync an appended file after the sweep's lock was let go: nothing is cut back if it fails (another
    minion may have appended since), the caller's settlement fails and is made again."""
    os.fsync(fd)


def read_appended(fd: int, position: int) -> tuple[list[Any], int]:
    """The records appended after `position`, and the position after them.

    A torn last record (a writer killed mid-write, or whose cut-back failed)
    is cut off, as execo does, so that the next append starts clean. The
    caller holds the sweep's lock.
    """
    records: list[Any] = []
    return records, scan_appended(fd, position, lambda record, _: records.append(record))


_MANY = 1 << 16


def _read_to(fd: int, position: int, size: int) -> bytes:
    """The bytes of `fd` from `position` to `size` (or its end, if shorter)."""
    chunks, read = [], 0
    while read < size - position:
        chunk = os.pread(fd, size - position - read, position + read)
        if not chunk:
            break
        chunks.append(chunk)
        read += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_from(fd: int, position: int) -> bytes:
    """What `fd` holds after `position` (empty when nothing)."""
    size = os.fstat(fd).st_size
    return _read_to(fd, position, size) if size > position else b""


def scan_appended(fd: int, position: int, apply: Callable[[Any, memoryview], object],
                  known: Optional[Callable[[memoryview], bool]] = None, cut: bool = True) -> int:
    """`read_appended`, one record at a time: `apply` each, with its bytes, and return the position after
    them (a million records done are not held at once). When there are many (`_MANY` bytes or more: a
    minion catching up), a record pickled in one frame (protocol 4 and later: its length is in its first
    bytes) is first given as its bytes to `known`, and unpickled only if that returns False; a few are
    unpickled, which costs less than finding their frames. Not `cut` (a read without the sweep's lock):
    a torn record ends the read and is left in place (it may be an append being written)."""
    data = read_from(fd, position)
    good, torn = scan_records(data, 0, len(data), apply, known)
    if torn and cut:
        os.ftruncate(fd, position + good)
    return position + good


def scan_records(data: bytes, start: int, end: int, apply: Callable[[Any, memoryview], object],
                 known: Optional[Callable[[memoryview], bool]] = None) -> tuple[int, bool]:
    """The records of `data` from `start` until one ends at `end` or after (`scan_appended`): where the
    last one read ends, and whether a torn one came before `end`."""
    if end - start < _MANY:
        known = None
    stream = io.BytesIO(data)  # which shares `data` (bytes) rather than copy it: a big `done` is held once
    stream.seek(start)
    view = memoryview(data)
    good = start
    while good < end:
        if known is not None and data[good + 2 : good + 3] == _FRAME and data[good] == 0x80 and data[good + 1] >= 4:
            after = good + 11 + int.from_bytes(data[good + 3 : good + 11], "little")
            if after <= len(data) and data[after - 1 : after] == b"." and known(view[good:after]):
                good = after
                stream.seek(good)
                continue
        try:
            record = pickle.load(stream)
        except TORN:
            return good, True
        except FOREIGN as exc:
            raise ForeignParameter(exc) from None
        after = stream.tell()
        apply(record, view[good:after])
        good = after
    return good, False


def read_whole(path: StrPath) -> bytes:
    """The content of `path`; empty when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return b""
