"""The guard: a small process that outlives its minion to end the runs the minion leaves.

Every process of a run carries `MINION_RUN_ID=<token>-<seq>` in its
environment (inherited by whatever the run starts, whatever it does with its
session, its process group or its stdio). The minion starts the guard once,
in a session of its own (a Ctrl-C or a closed terminal does not reach it),
and tells it on a pipe when run `<seq>` starts (`+seq`) and ends (`-seq`).
The guard then

- kills what is left of an ended run (a `setsid` daemon, a double fork) a
  moment after it ended: `-seq` arrives, the guard looks;
- kills every process of the minion's runs once the pipe closes: the
  minion is gone, however it went (SIGKILL by the OOM killer, a crash, a
  normal exit), and nothing of its runs may go on without it.

It runs as a script with the standard library only (`python -I -S guard.py
TOKEN`), so that it starts in milliseconds and holds a few MB. The same
functions serve the minion itself to kill a run at its timeout or stop.

A process that clears its environment (`env -i`) carries no mark: the run's
process group still catches it while it stays in the group.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable
from typing import Optional

#: The environment variable that marks a run's processes.
MARK = "MINION_RUN_ID"
#: Seconds between the polite SIGTERM and the SIGKILL of a run's processes
#: (at its timeout, at a stop, or here).
KILL_AFTER = 3.0
#: After a run ended, how long before its leftovers are looked for.
SETTLE = 0.3


def mark_of(token: str, seq: int) -> str:
    """The MINION_RUN_ID value of run `seq` of the minion whose guard token is `token`."""
    return f"{token}-{seq}"


def marked(prefix: str) -> dict[int, str]:
    """The processes whose environment holds MINION_RUN_ID=prefix...: pid -> the whole run id.

    Reads /proc/PID/environ (the environment the process was started with);
    zombies and other users' processes read as empty and are left out.
    """
    needle = f"{MARK}={prefix}".encode()
    me = os.getpid()
    found: dict[int, str] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        at = environ.find(b"\0" + needle)
        if at < 0 and not environ.startswith(needle):
            continue
        start = at + 1 if at >= 0 else 0
        end = environ.find(b"\0", start)
        value = environ[start:end if end >= 0 else len(environ)]
        found[int(name)] = value.split(b"=", 1)[1].decode("ascii", "replace")
    return found


def send(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def kill_marked(
    prefix: str, hard: bool = False, keep: Callable[[], Collection[str]] = frozenset, only: Optional[str] = None
) -> int:
    """SIGTERM (SIGKILL when hard) every process marked with `prefix`, except the runs that `keep()`
    returns (with `only`, the processes of that one run: run 1's mark is a prefix of run 10's);
    SIGKILL what is still there KILL_AFTER later. Returns how many processes were signalled.

    `keep()` is asked after each look at the processes, as the runs go on starting meanwhile
    (the guard waits up to KILL_AFTER here): a run announced before it started is kept."""

    def victims() -> set[int]:
        found = marked(prefix)
        kept = keep()
        return {pid for pid, run in found.items() if run not in kept and only in (None, run)}

    first = victims()
    if not first:
        return 0
    send(first, signal.SIGKILL if hard else signal.SIGTERM)
    deadline = time.monotonic() + KILL_AFTER
    while (left := victims()) and time.monotonic() < deadline:
        send(left - first, signal.SIGKILL if hard else signal.SIGTERM)  # forked since
        first |= left
        time.sleep(0.05)
    for _ in range(3):  # a process may fork while being killed: look again
        left = victims()
        if not left:
            break
        send(left, signal.SIGKILL)
        first |= left
        time.sleep(0.05)
    return len(first)


class _Runs:
    """What the minion said on the pipe: which of its runs are going on."""

    def __init__(self, fd: int, token: str) -> None:
        self.fd = fd
        self.token = token
        self.active: set[str] = set()
        self.open = True
        self._partial = b""  # a line cut between two reads

    def read(self) -> bool:
        """Take in one read's worth of lines; True when a run ended."""
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            data = b""
        if not data:
            self.open = False
            return False
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        ended = False
        for line in lines:
            seq = line[1:].decode("ascii", "replace")
            if not seq.isdigit():
                continue
            if line.startswith(b"+"):
                self.active.add(mark_of(self.token, int(seq)))
            elif line.startswith(b"-"):
                self.active.discard(mark_of(self.token, int(seq)))
                ended = True
        return ended

    def drain(self) -> None:
        """Take in whatever the minion said meanwhile, without waiting."""
        while self.open and select.select([self.fd], [], [], 0)[0]:
            self.read()

    def current(self) -> set[str]:
        """The runs going on, as the minion said up to now."""
        self.drain()
        return self.active


def _say(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"minionize guard: {text}\n".encode())


def watch(fd: int, token: str, docker: bool = False) -> int:
    """The guard's loop: follow the minion's runs on `fd` until it closes, then end them all."""
    prefix = f"{token}-"
    runs = _Runs(fd, token)
    sweep_at = None
    while runs.open:
        wait = None if sweep_at is None else max(0.0, sweep_at - time.monotonic())
        if select.select([fd], [], [], wait)[0]:
            if runs.read() and sweep_at is None:
                sweep_at = time.monotonic() + SETTLE
            continue
        # Look first, then hear what was said meanwhile: a run started since the look
        # was announced (`+seq` comes before the start), so it is in `active` now.
        found = marked(prefix)
        active = runs.current()
        leftovers = {run for run in found.values() if run not in active}
        if leftovers:
            killed = kill_marked(prefix, keep=runs.current)
            _say(f"killed {killed} process(es) left behind by finished runs")
        sweep_at = None
    killed = kill_marked(prefix)
    if killed:
        _say(f"the minion is gone: killed {killed} process(es) of its runs")
    if docker:
        _remove_containers(token)
    return 0


#: The label that the docker callback puts on its containers: the guard token of its minion.
DOCKER_LABEL = "minionize.guard"


def _remove_containers(token: str) -> None:
    """Remove (killing them first) the containers of the minion's runs, through the Docker API."""
    import json  # the guard's last act: not at its start
    from urllib.parse import quote

    filters = quote(json.dumps({"label": [f"{DOCKER_LABEL}={token}"]}))
    try:
        listed = json.loads(_docker("GET", f"/containers/json?all=1&filters={filters}"))
        for container in listed:
            _docker("DELETE", f"/containers/{container['Id']}?force=1&v=1")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _say(f"could not remove the containers of the minion's runs: {exc}")
        return
    if listed:
        _say(f"the minion is gone: removed {len(listed)} container(s) of its runs")


def _docker(method: str, path: str) -> bytes:
    """One request to the Docker engine of DOCKER_HOST (a unix socket, or plain TCP)."""
    import http.client
    import socket

    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if host.startswith("unix://"):
        connection = http.client.HTTPConnection("localhost", timeout=10)
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.settimeout(10)
        unix.connect(host[len("unix://"):])
        connection.sock = unix
    elif host.startswith("tcp://") and not os.environ.get("DOCKER_TLS_VERIFY"):
        connection = http.client.HTTPConnection(host[len("tcp://"):].rstrip("/"), timeout=10)
    else:
        raise OSError(f"DOCKER_HOST {host.split('://')[0]}:// with TLS is not supported here")
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status >= 400 and response.status != 404:
        raise OSError(f"{method} {path.split('?')[0]}: HTTP {response.status}")
    return body


class Guard:
    """The minion's side: marks each run, starts the guard at the first run, tells it about runs.

    Thread-safe: slot threads start and end their runs concurrently (each
    line is one write, below PIPE_BUF, so lines never interleave).
    """

    def __init__(self, docker: bool = False) -> None:
        #: True: the runs are containers too (labelled DOCKER_LABEL=token), removed if the minion dies.
        self.docker = docker
        self.token = os.urandom(6).hex()
        self._seq = itertools.count(1)
        self._fd: Optional[int] = None
        self._pid: Optional[int] = None
        self._lock = threading.Lock()
        self._failed = False

    def mark(self) -> tuple[int, str]:
        """A new run: its number and its MINION_RUN_ID."""
        seq = next(self._seq)
        return seq, mark_of(self.token, seq)

    def started(self, seq: int) -> None:
        """Run `seq` is about to start (said before, so that no look can miss it)."""
        if self._fd is None and not self._failed:
            with self._lock:
                if self._fd is None and not self._failed:
                    self._start()
        self._tell(f"+{seq}\n")

    def ended(self, seq: int) -> None:
        """Run `seq` is over: what is left of it may go."""
        self._tell(f"-{seq}\n")

    def close(self, timeout: float = KILL_AFTER + 2) -> None:
        """The minion is done: the guard ends what is left of the runs, and exits."""
        with self._lock:
            fd, self._fd, self._failed = self._fd, None, True
        if fd is None:
            return
        os.close(fd)
        deadline = time.monotonic() + timeout
        while self._pid is not None and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(self._pid, os.WNOHANG)[0] == 0:
                    time.sleep(0.02)
                    continue
            self._pid = None

    def _tell(self, line: str) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            os.write(fd, line.encode())
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.close(fd)
            self._lost(f"the guard is gone ({exc.strerror})")

    def _start(self) -> None:
        from .callbacks.child import inheritable_descriptors  # the minion's side only

        read, write = os.pipe()
        try:
            if not sys.executable:
                raise OSError(0, "no Python interpreter to run it with")
            self._pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-I", "-S", os.path.abspath(__file__), self.token,
                 *(["--docker"] if self.docker else [])],
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, read, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    *((os.POSIX_SPAWN_CLOSE, fd) for fd in inheritable_descriptors() or ()),
                ],
                setsid=True,  # out of reach of a Ctrl-C or a hang-up meant for the minion
            )
        except OSError as exc:
            os.close(write)
            self._lost(f"cannot start the guard ({exc.strerror})")
        else:
            self._fd = write
        finally:
            os.close(read)

    def _lost(self, why: str) -> None:
        self._failed, self._fd = True, None
        logging.getLogger("minionize").warning(
            "%s: the runs of a minion that is killed may outlive it; timeouts and stops still end them", why
        )


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        _say("usage: guard.py TOKEN [--docker] (commands on stdin)")
        return 2
    # Deaf to what is meant for the minion (`pkill minionize`, a drain signal sent to every
    # process of a job): the minion's stop has a grace period that the guard must not cut short.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                   signal.SIGUSR2, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    return watch(0, argv[1], docker=argv[2:] == ["--docker"])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
