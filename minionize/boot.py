"""The commands' entry points: a stop signal while a command imports the rest of minionize is
handled as once it runs, never a traceback (on NFS that import alone may take seconds).

Only earlystop is imported before the handlers are in place (the package's
__init__ imports nothing either; not even typing: about 5 ms). `minionize`
records the signal: the first is a warm stop obeyed before anything is
taken, a second a cold stop (see minionize/earlystop.py). minion-push and
minion-status end with exit 130 and one line, as a Ctrl-C does once they
run; mtop quits, as Ctrl-C makes it do.
"""

import os
import sys

from .earlystop import StoppedStarting, early_stops

#: exitcodes.COLD_STOP and exitcodes.INTERRUPTED, not imported: nothing else comes first.
_COLD_STOP = _INTERRUPTED = 130


def minionize() -> int:
    _standard_descriptors()
    with early_stops():
        try:
            from .cli import main

            return main()
        except StoppedStarting as stopped:
            print(f"minionize: {stopped}", file=sys.stderr)
            return _COLD_STOP


def minion_push() -> int:
    return _run("minionize.push", "minion-push: interrupted, before anything was queued")


def minion_status() -> int:
    return _run("minionize.status", "minion-status: interrupted")


def mtop() -> int:
    return _run("minionize.mtop", None)


def _run(module: str, interrupted: "str | None") -> int:
    _standard_descriptors()
    try:
        main = __import__(module, fromlist=["main"]).main
    except KeyboardInterrupt:
        if interrupted is None:
            return 0
        print(interrupted, file=sys.stderr)
        return _INTERRUPTED
    return main()


def _standard_descriptors() -> None:
    """Descriptors 0, 1 and 2 open, on /dev/null when the command was started with one closed
    (`minionize ... >&-`): else the next file opened (a sweep's, a lease) would take its number,
    and what is written to stdout would land in it; and sys.stdout would be None."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        setattr(sys, name, open(fd, mode, closefd=False, encoding="utf-8", errors="backslashreplace"))  # noqa: SIM115 - the process's own, for its life
