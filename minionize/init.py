"""minionize as PID 1: a parent that reaps what the kernel hands to PID 1, as tini does.

The official image runs minionize under tini. Started as PID 1 without it
(`docker run --entrypoint minionize`, an `unshare --fork --pid` sandbox),
minionize would inherit every orphaned process of its PID namespace (the
background children of its runs) and never wait for them: zombies pile up,
and a run's process group stays "alive" until it is killed. So, as PID 1,
minionize forks: the parent only forwards signals to the minion and reaps
every child it is handed; the child is the minion. The parent exits with the
minion's exit code (128 + N when signal N killed it), and the kernel then
ends whatever is left in the namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

#: What PID 1 passes on to the minion (the stops, the drain signals, and the job-control ones).
FORWARDED = (
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
    signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT,
)


def become_init() -> None:
    """When this process is PID 1, fork: return in the child (the minion); the parent never returns."""
    if os.getpid() != 1:
        return
    # Blocked across the fork, so that a signal that arrives meanwhile is forwarded, not lost.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    minion = os.fork()
    if minion == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        _isolate()
        return
    for signum in FORWARDED:
        signal.signal(signum, _forwarder(minion))
    signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    sys.stdout.flush()
    os._exit(reap_until(minion))


def _forwarder(minion: int) -> Any:
    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(minion, signum)

    return forward


def reap_until(minion: int) -> int:
    """Wait for every child until `minion` exits; its exit code, as a shell reports it."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 1  # the minion is not our child: cannot happen after the fork
        if pid == minion:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


def _isolate() -> None:
    """Put the minion in a process group of its own, in the terminal's foreground when there is one:
    a Ctrl-C then reaches the minion once, not also through PID 1 (tini's isolate_child)."""
    os.setpgid(0, 0)
    if not os.isatty(0):
        return
    # A background group that sets the foreground would get SIGTTOU: ignored for that call.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(0, os.getpgrp())
    finally:
        signal.signal(signal.SIGTTOU, previous)
