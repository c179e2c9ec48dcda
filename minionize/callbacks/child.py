"""A run's process: started in a process group of its own, watched, stopped.

`spawn` starts the program with posix_spawn(3) (a vfork and an exec in
glibc, the environment converted in C) rather than `subprocess.Popen`,
whose Python costs as much as the launch itself when a run is short (bench/
overhead.py). Popen remains for a run with its own working directory, which
posix_spawn cannot set, or without /proc. Either way: stdin is /dev/null, stdout and stderr
are pipes, the child leads a new session (so its process group holds its
grandchildren), SIGPIPE and SIGXFSZ are back to their defaults, and only
the three standard descriptors are inherited (posix_spawn closes those that
/proc/self/fd shows inheritable; Python opens its own close-on-exec).

`supervise` forwards the output line by line while the run lasts, enforces
the timeout and stops, and kills what is left of the group once the run's
leader exited. The run lasts as long as its leader (watched through a pidfd),
not as long as its pipes: a run may close them at once. A timeout or a stop
ends the group and every process carrying the run's MINION_RUN_ID
(minionize/guard.py), in the group or not.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Optional

from ..guard import KILL_AFTER, kill_marked, marked, send
from .base import RunContext
from .output import PLAIN, OutputStream, RunOutput

if TYPE_CHECKING:
    from subprocess import Popen

#: After its leader exited, how long a run's pipes may stay open (held by
#: something that left the process group) before they are no longer read.
LINGER = 1.0
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
_READABLE = select.POLLIN | select.POLLHUP | select.POLLERR


class Child:
    """A started run: its pid (also its process group's id) and its output pipes."""

    def __init__(self, pid: int, stdout: int, stderr: int, process: Optional[Popen[bytes]] = None) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: Optional[int] = None
        self._process = process  # started by Popen: Popen reaps it

    def poll(self) -> Optional[int]:
        """The exit code (negative: the signal) once the leader exited, else None."""
        if self.returncode is None:
            if self._process is not None:
                self.returncode = self._process.poll()
            else:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            if self._process is not None:
                self.returncode = self._process.wait()
            else:
                self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode


def which(program: str, path: Optional[str] = None) -> Optional[str]:
    """shutil.which for POSIX, without the 3 ms that importing shutil adds to start-up."""
    for directory in (path if path is not None else os.environ.get("PATH", os.defpath)).split(os.pathsep):
        candidate = os.path.join(directory or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def spawn(
    argv: list[str], executable: str, env: Mapping[bytes, bytes], cwd: Optional[str] = None
) -> Child:
    """Start `argv` (the program at `executable`); OSError when it cannot start (ENOENT, E2BIG...).

    Popen (which closes every descriptor above 2 in the child) when there
    is a working directory to set, or no /proc to list the descriptors.
    """
    inherited = None if cwd is not None else inheritable_descriptors()
    if inherited is None:
        return _popen(argv, executable, env, cwd)
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        pid = os.posix_spawn(
            executable,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_write, 1),
                (os.POSIX_SPAWN_DUP2, err_write, 2),
                # A descriptor closed meanwhile is no error: glibc ignores EBADF here.
                *((os.POSIX_SPAWN_CLOSE, fd) for fd in inherited),
            ],
            setsid=True,
            setsigdef=_RESET_SIGNALS,
            setsigmask=(),
        )
    except BaseException:
        os.close(out_read)
        os.close(err_read)
        raise
    finally:
        os.close(out_write)
        os.close(err_write)
    return Child(pid, out_read, err_read)


def inheritable_descriptors() -> Optional[list[int]]:
    """The descriptors above 2 that a child would inherit; None when /proc cannot tell."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    inherited = []
    for fd in map(int, names):
        try:
            if fd > 2 and os.get_inheritable(fd):
                inherited.append(fd)
        except OSError:
            pass  # closed since: the listing's own descriptor, or another thread's
    return inherited


def _popen(argv: list[str], executable: str, env: Mapping[bytes, bytes], cwd: Optional[str]) -> Child:
    import subprocess  # rarely needed: not at start-up

    process = subprocess.Popen(
        argv,
        executable=executable,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    # The descriptors now belong to the Child (closed by supervise).
    stdout, stderr = os.dup(process.stdout.fileno()), os.dup(process.stderr.fileno())
    process.stdout.close()
    process.stderr.close()
    return Child(process.pid, stdout, stderr, process)


def supervise(
    child: Child, context: RunContext, mark: Optional[str] = None, output: RunOutput = PLAIN
) -> tuple[Optional[str], OutputStream, OutputStream]:
    """Wait for the run to end, forwarding its output; returns (why it was stopped, stdout, stderr).

    Why it was stopped is None, "timeout" or "cancel". The exit code is in
    `child.returncode`. The run ends when its leader exits, whatever
    happened to its pipes (a run may close or redirect them at once): the
    timeout and the stops apply to it until then. `mark` is the run's
    MINION_RUN_ID: a stop or a timeout also ends the processes that left
    the run's process group. `output` tags and copies what the run writes.
    """
    stdout, stderr = output.streams()
    streams = {child.stdout: stdout, child.stderr: stderr}
    poller = select.poll()
    for fd in streams:
        poller.register(fd, select.POLLIN)
    exit_fd = _pidfd(child.pid)  # readable once the leader exits: no polling delay
    if exit_fd is not None:
        poller.register(exit_fd, select.POLLIN)
    open_pipes = set(streams)
    deadline = time.monotonic() + context.timeout if context.timeout else None
    stopped: Optional[str] = None
    exited_at: Optional[float] = None
    try:
        while exited_at is None or (open_pipes and time.monotonic() - exited_at <= LINGER):
            _pump(poller, streams, open_pipes, exit_fd)
            stopped = stopped or _stop_if_asked(child, context, deadline, mark)
            if exited_at is None and child.poll() is not None:
                exited_at = time.monotonic()
                # Leftover grandchildren of a finished run are not allowed to linger.
                kill_group(child, hard=False)
    finally:
        for fd, stream in streams.items():
            stream.close()
            os.close(fd)
        if exit_fd is not None:
            os.close(exit_fd)
    return stopped, stdout, stderr


def _pidfd(pid: int) -> Optional[int]:
    """A descriptor that polls readable when `pid` exits (Linux 5.3+), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _pump(
    poller: select.poll, streams: dict[int, OutputStream], open_pipes: set[int], exit_fd: Optional[int]
) -> None:
    """Forward what the pipes have, waiting 100 ms at most (less when the leader exits)."""
    for fd, events in poller.poll(100):
        if fd == exit_fd:
            poller.unregister(fd)  # the leader exited: the caller reaps it
            continue
        data = os.read(fd, 65536) if events & _READABLE else b""
        if data:
            streams[fd].feed(data)
        else:
            poller.unregister(fd)
            open_pipes.discard(fd)


def _stop_if_asked(
    child: Child, context: RunContext, deadline: Optional[float], mark: Optional[str]
) -> Optional[str]:
    """Stop the run past its timeout or when the worker cancels it; why, or None."""
    if deadline is not None and time.monotonic() > deadline:
        kill_run(child, mark, hard=False)
        return "timeout"
    if context.cancel.is_set():
        kill_run(child, mark, hard=context.hard_cancel)
        return "cancel"
    return None


def kill_run(child: Child, mark: Optional[str], hard: bool) -> None:
    """End the whole run: its process group and every process that carries its mark
    (SIGTERM, or SIGKILL when hard; SIGKILL for what is left KILL_AFTER later)."""
    first = signal.SIGKILL if hard else signal.SIGTERM

    def members() -> set[int]:
        # Exactly this run: its mark is a prefix of others' (run 1, run 10).
        return {pid for pid, run in marked(mark).items() if run == mark} if mark is not None else set()

    _signal_group(child.pid, first)
    signalled = members()
    send(signalled, first)
    deadline = time.monotonic() + KILL_AFTER
    while time.monotonic() < deadline:
        child.poll()  # reap the leader: a zombie would keep the group alive
        left = members()
        if not left and not _group_alive(child.pid):
            return
        send(left - signalled, first)  # forked since the last look
        signalled |= left
        time.sleep(0.05)
    _signal_group(child.pid, signal.SIGKILL)
    if mark is not None:
        kill_marked(mark, hard=True, only=mark)


def kill_group(child: Child, hard: bool) -> None:
    """SIGTERM the run's process group (SIGKILL when hard), then SIGKILL what is left after KILL_AFTER."""
    group = child.pid
    if not _signal_group(group, signal.SIGKILL if hard else signal.SIGTERM):
        return
    deadline = time.monotonic() + KILL_AFTER
    while time.monotonic() < deadline:
        child.poll()  # reap the leader: a zombie would keep the group alive
        if not _group_alive(group):
            return
        time.sleep(0.02)
    _signal_group(group, signal.SIGKILL)


def _group_alive(group: int) -> bool:
    """True while a process of the group lives (zombies waiting for a slow reaper do not count)."""
    if not _signal_group(group, 0):
        return False
    try:
        names = os.listdir("/proc")
    except OSError:
        return True
    for name in names:
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rpartition(b")")[2].split()
        except OSError:
            continue  # not a process, or gone
        if len(fields) > 2 and int(fields[2]) == group and fields[0] != b"Z":
            return True
    return False


def _signal_group(group: int, signum: int) -> bool:
    try:
        os.killpg(group, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False
