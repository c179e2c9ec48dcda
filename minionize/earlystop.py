"""Stop signals while a command starts: recorded from its first line, never a traceback.

This module imports nothing of minionize's own, so that the commands'
entry points (minionize/boot.py) install it before they import the rest: on
a slow file system (a package on NFS) that import alone takes seconds.
"""

import signal
import sys

#: The signals that ask for a stop: the first a warm one, the second a cold one.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

#: The stop signals that came while the minion was starting, in order.
_EARLY: list[int] = []
_depth = 0


class StoppedStarting(BaseException):
    """A second stop signal while the minion was starting: a cold stop before anything was taken.

    A BaseException, as KeyboardInterrupt: no `except Exception` on the way
    (an engine's connection retries) swallows it.
    """

    def __init__(self, signals: list[int]) -> None:
        super().__init__(signals)
        self.signals = list(signals)

    def __str__(self) -> str:
        names = ", then ".join(signal.Signals(signum).name for signum in self.signals)
        return f"cold stop while starting ({names}): nothing was taken"


def caught(signum: int) -> bool:
    """Whether this process may handle `signum`: not when it was started with the signal ignored.

    `nohup` ignores SIGHUP, a shell ignores SIGINT in the jobs it puts in the
    background: those say "do not stop on it", and the minion does not.
    """
    return signal.getsignal(signum) is not signal.SIG_IGN


def _record(signum: int, frame: object) -> None:
    _EARLY.append(signum)
    if len(_EARLY) > 1:
        raise StoppedStarting(_EARLY)


class early_stops:  # noqa: N801 - used as the function it was: `with early_stops():`
    """While the `minionize` command starts (its imports, engine, callback), a stop signal is
    recorded, never a traceback: the first is a warm stop that the minion's loop obeys before taking
    anything (see StopRequest.install), the second raises StoppedStarting. The handlers are put back
    at the end of the outermost `with`; an inner one (the command's main under its entry point)
    keeps what the outer one recorded. Off the main thread (embedded), it does nothing."""

    def __enter__(self) -> None:
        global _depth
        self.previous: dict = {}
        self.active = on_main_thread()
        if not self.active:
            return
        if _depth == 0:
            _EARLY.clear()
            self.previous = {signum: signal.signal(signum, _record) for signum in STOP_SIGNALS if caught(signum)}
        _depth += 1

    def __exit__(self, *exc: object) -> None:
        global _depth
        if not self.active:
            return
        _depth -= 1
        if _depth == 0:
            for signum, handler in self.previous.items():
                signal.signal(signum, handler)
            _EARLY.clear()


def on_main_thread() -> bool:
    """Whether signal handlers may be set here (embedded in a thread, the host program owns signals).

    threading is not imported for that (about 1.5 ms before the handlers): without it, no
    thread was started by Python code, and this is the main one."""
    threading = sys.modules.get("threading")
    return threading is None or threading.current_thread() is threading.main_thread()


def take() -> list[int]:
    """The stop signals recorded so far, now the minion's own handlers are in place."""
    taken = list(_EARLY)
    _EARLY.clear()
    return taken
