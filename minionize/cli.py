"""The `minionize` command: `minionize CMD [ARGS...]` runs CMD ARGS... <param> for each parameter."""

from __future__ import annotations

import os
import sys
from typing import Optional

from . import __version__, config, exitcodes
from .callbacks.child import which
from .callbacks.process import ProcessCallback
from .errors import ConfigError, MinionizeError
from .init import become_init
from .minion import assemble, configure_logging, exit_code_of

USAGE = """\
usage: minionize [--] CMD [ARGS...]
       minionize              (the command comes from .minionize.yml)

Takes parameters from a queue and runs `CMD ARGS... PARAM` for each one:
exit code 0 acks the parameter, anything else retries it, up to
MINION_MAX_ATTEMPTS, then sets it aside as failed.

Configured by environment variables (a .env file in the working directory
is read without overriding them):
  MINION_ENGINE        execo (default), file, memory, google, pulsar, redis, amqp
  MINION_CONCURRENCY   parameters run at once (default 1, at most 1024)
  MINION_MAX_ATTEMPTS  attempts before a parameter is set aside (default 3)
  MINION_TIMEOUT       seconds before a run is killed (default: none)
  MINION_GRACE_PERIOD  seconds a stop waits for running parameters (default 25)
  MINION_IDLE_TIMEOUT  exit 0 after that long without a parameter
  MINION_ARGS          template mapping dict parameters to arguments
  MINION_REPORTER      null (default), stdout, json
  MINION_DRY           1 to print what would run, and run nothing
  MINION_PASS_ENV      credential variables the program may see (REDIS_URL,...):
                       by default it gets the environment less minionize's own
  MINION_STRIKE_AFTER  fast failures in a row, on different parameters, that make
                       a strike (default 10; 0: never); during a strike, local
                       failures (exit 126/127) are given back uncounted
  MINION_STRIKE_FAST   seconds under which a failure is fast (default 5)
  MINION_STRIKE_PAUSE  seconds a strike takes nothing, doubled at each (default 30)
  MINION_MAX_STRIKES   strikes before the minion exits 4, broken node (default 3)
  EXECO_PERSISTENCE_DIR  the execo sweep directory (default sweeps)
  FILE_PATH, FILE_DECODER  the file engine's input (default stdin) and decoder
  each engine's own variables: see `pydoc minionize.engines.<engine>`

A stop (SIGTERM, SIGINT, SIGHUP) lets runs finish within the grace period,
then ends every process they started (SIGTERM, SIGKILL 3 s later).

Exit codes: 0 drained or stopped, 2 bad configuration, 3 queue unreachable,
4 broken node (every run failed at once, strike after strike), 130 stopped
by a second signal.
"""


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return exitcodes.OK
    if args and args[0] == "--version":
        print(f"minionize {__version__}")
        return exitcodes.OK
    if args and args[0] == "--":
        args = args[1:]
    become_init()  # as PID 1: a parent that reaps, and the minion in a child
    try:
        return _run(args)
    except MinionizeError as error:
        print(f"minionize: {error}", file=sys.stderr)
        return exit_code_of(error)


def _run(args: list[str]) -> int:
    settings = config.load(args)
    configure_logging(settings)
    if not settings.command:
        raise ConfigError(
            "command",
            None,
            "give the program to run: minionize CMD [ARGS...], or `command:` in .minionize.yml",
        )
    _check_program(settings.command[0])
    callback = ProcessCallback(list(settings.command), settings.args_template)
    return assemble(settings, callback).run()


def _check_program(program: str) -> None:
    """Fail before taking any parameter when the program cannot be run at all."""
    if os.sep in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise ConfigError("command", program, "expected an executable file")
    elif which(program) is None:
        raise ConfigError("command", program, "command not found in PATH")
