"""The `minionize` command: `minionize [FLAGS] CMD [ARGS...]` runs CMD ARGS... <param> for each parameter."""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Optional

from . import __version__, config, exitcodes
from .assembly import assemble, configure_logging, exit_code_of, say_error
from .callbacks.child import which
from .callbacks.process import ProcessCallback
from .config import Settings
from .earlystop import StoppedStarting, early_stops
from .errors import ConfigError, MinionizeError
from .init import become_init
from .spelling import misspellings

USAGE = """\
usage: minionize [FLAGS] [--] CMD [ARGS...]
       minionize [FLAGS]      (the command comes from .minionize.yml)

Takes parameters from a queue and runs `CMD ARGS... PARAM` for each one:
exit code 0 acks the parameter, anything else retries it, up to
MINION_MAX_ATTEMPTS, then sets it aside as failed. With no engine chosen,
no execo sweep and a pipe or a file on stdin (`seq 10 | minionize echo`),
the parameters are stdin's lines.

Flags (they win over the variables, and end at the first word that is not one):
  -j, --concurrency N  MINION_CONCURRENCY
  --timeout SECONDS    MINION_TIMEOUT
  --retries N          MINION_MAX_ATTEMPTS=N+1
  --engine NAME        MINION_ENGINE
  --results DIR        MINION_RESULTS
  --tag                MINION_TAG=1
  --dry-run            MINION_DRY=1
  --version, -h/--help, -- (what follows is the command)

Configured by environment variables (a .env file in the working directory
is read without overriding them, then the env: of .minionize.yml):
  MINION_ENGINE        execo (default), file, memory, google, pulsar, redis, amqp,
                       nats, postgres, or an engine of your own (module:Class)
  MINION_CONCURRENCY   parameters run at once (default 1, at most 1024)
  MINION_MAX_ATTEMPTS  attempts before a parameter is set aside (default 3)
  MINION_TIMEOUT       seconds before a run is killed (default: none)
  MINION_GRACE_PERIOD  seconds a stop waits for running parameters (default 25)
  MINION_IDLE_TIMEOUT  exit 0 after that long without a parameter
  MINION_BATCH         1: a minion on a broker exits once the queue is drained
                       (default: it waits for work until it is stopped)
  MINION_DEADLINE      seconds from start, or an ISO 8601 time, after which
                       nothing new is taken (default: none)
  MINION_DRAIN_SIGNAL  a warm stop that exits MINION_DRAIN_EXIT_CODE
                       (default SIGUSR2; none disables it)
  MINION_DRAIN_EXIT_CODE  exit code after the drain signal (default 0; OAR: 99)
  MINION_FAILED_EXIT_CODE exit code when parameters were set aside (default 123;
                       0: exit 0 all the same)
  MINION_ARGS          template mapping dict parameters to arguments
  MINION_RESULTS       keep each run's stdout, stderr and exit code in
                       DIR/<parameter>/ (default: none)
  MINION_TAG           1 to start each line a run prints with its parameter
  MINION_REPORTER      null (default), stdout, json, or several: json,stdout
  REPORTER_JSON_DIRECTORY  the json reporter's directory (default minion-report)
  MINION_METRICS_PORT  serve Prometheus metrics and probes there (default: none)
  MINION_METRICS_ADDRESS  their address (default 0.0.0.0)
  MINION_LOG_LEVEL     DEBUG, INFO (default), WARNING, ERROR
  MINION_LOG_FORMAT    text (default), or json: one JSON object a line
  MINION_CONFIG        the configuration file (default .minionize.yml)
  MINION_DRY           1 to print what would run, and run nothing
  MINION_PASS_ENV      credential variables the program may see (REDIS_URL,...):
                       by default it gets the environment less minionize's own
  MINION_STRIKE_AFTER  fast failures in a row, on different parameters, that make
                       a strike (default 10; 0: never); during a strike, local
                       failures (exit 126/127) are given back uncounted
  MINION_STRIKE_FAST   seconds under which a failure is fast (default 5)
  MINION_STRIKE_PAUSE  seconds a strike takes nothing, doubled at each up to 900 (default 30)
  MINION_MAX_STRIKES   strikes before the minion exits 4, broken node (default 3)
  EXECO_PERSISTENCE_DIR  the execo sweep directory (default sweeps)
  MINION_LEASE_SECONDS the execo lease: a dead minion's parameter comes back
                       after that long (default 60)
  EXECO_TAKE_AHEAD     runs shorter than this (default 0.05 s) are taken
                       several per lock of the execo sweep (0: one per slot)
  FILE_PATH, FILE_DECODER  the file engine's input (default stdin) and decoder
  each engine's own variables: see `pydoc minionize.engines.<engine>`

A stop (SIGTERM, SIGINT, SIGHUP) lets runs finish within the grace period,
then ends every process they started (SIGTERM, SIGKILL 3 s later). A signal
ignored at start (nohup's SIGHUP) stays ignored.

Exit codes: 0 drained or stopped, 2 bad configuration, 3 queue unreachable,
4 broken node (every run failed at once, strike after strike), 123 some
parameters were set aside (MINION_FAILED_EXIT_CODE), 130 stopped by a
second signal.
"""

#: Flags that take a value, and the variable each one sets.
VALUED = {
    "-j": "MINION_CONCURRENCY", "--concurrency": "MINION_CONCURRENCY", "--timeout": "MINION_TIMEOUT",
    "--retries": "MINION_MAX_ATTEMPTS", "--engine": "MINION_ENGINE", "--results": "MINION_RESULTS",
}
#: Flags that stand alone, and the variable each one sets to 1.
SWITCHES = {"--dry-run": "MINION_DRY", "--tag": "MINION_TAG"}

log = logging.getLogger("minionize")


def main(argv: Optional[list[str]] = None) -> int:
    with early_stops():  # a Ctrl-C while starting is a stop, not a traceback
        try:
            return _main(sys.argv[1:] if argv is None else argv)
        except StoppedStarting as stopped:
            print(f"minionize: {stopped}", file=sys.stderr)
            return exitcodes.COLD_STOP


def _main(args: list[str]) -> int:
    try:
        action, flags, command = parse_flags(args)
    except ConfigError as error:
        print(f"minionize: {error} (see minionize --help)", file=sys.stderr)
        return exitcodes.CONFIG
    if action == "help":
        print(USAGE, end="")
        return exitcodes.OK
    if action == "version":
        print(f"minionize {__version__}")
        return exitcodes.OK
    become_init()  # as PID 1: a parent that reaps, and the minion in a child
    try:
        return _run(command, flags)
    except MinionizeError as error:
        say_error(error)
        return exit_code_of(error)


def parse_flags(args: list[str]) -> tuple[Optional[str], dict[str, str], list[str]]:
    """(help, version or None; the flags as {flag: value}; the command), up to the first non-flag word."""
    flags: dict[str, str] = {}
    rest = list(args)
    while rest and rest[0].startswith("-") and rest[0] != "-":
        word = rest.pop(0)
        if word == "--":
            break
        if word in ("-h", "--help"):
            return "help", flags, rest
        if word == "--version":
            return "version", flags, rest
        name, given, value = word.partition("=")
        if name.startswith("-j") and not name.startswith("--") and len(name) > 2:
            name, given, value = "-j", "=", name[2:]  # -j4
        if name in SWITCHES and not given:
            flags[name] = "1"
        elif name in VALUED:
            if not given:
                if not rest:
                    raise ConfigError(name, None, "expected a value after it")
                value = rest.pop(0)
            flags[name] = value
        else:
            known = [*VALUED, *SWITCHES, "--help", "--version"]
            raise ConfigError("flag", word, config.did_you_mean(name, known).replace("one of", "a flag among"))
    return None, flags, rest


def flag_variables(flags: dict[str, str]) -> dict[str, str]:
    """The variables the flags set (--retries N is N+1 attempts)."""
    variables = {}
    for name, value in flags.items():
        if name == "--retries":
            if not (value.isascii() and value.isdigit() and len(value) <= 9):
                raise ConfigError("--retries", value, "expected a whole number >= 0 (retries after the first attempt)")
            value = str(int(value) + 1)
        variables[VALUED.get(name) or SWITCHES[name]] = value
    return variables


def _run(command: list[str], flags: dict[str, str]) -> int:
    os.environ.update(flag_variables(flags))  # the flags win, and the program sees the same values
    try:
        return _start(command)
    except ConfigError as error:
        raise _named_by_flag(error, flags) from None


def _start(command: list[str]) -> int:
    settings = _stdin_by_default(config.load(command))
    configure_logging(settings)
    for warning in misspellings(os.environ):
        log.warning("%s", warning)
    if not settings.command:
        raise ConfigError(
            "command",
            None,
            "give the program to run: minionize CMD [ARGS...], or `command:` in .minionize.yml",
        )
    _check_program(settings.command[0])
    callback = ProcessCallback(list(settings.command), settings.args_template)
    return assemble(settings, callback).run()


def _named_by_flag(error: ConfigError, flags: dict[str, str]) -> ConfigError:
    """A bad value given by a flag is reported under the flag's name."""
    for name, value in flags.items():
        if (VALUED.get(name) or SWITCHES.get(name)) == error.variable and name != "--retries":
            return ConfigError(name, value, error.accepted)
    return error


def _stdin_by_default(settings: Settings, environ: Optional[MutableMapping[str, str]] = None) -> Settings:
    """`seq 10 | minionize echo`: the file engine on stdin, when nothing chose an engine.

    Only when no engine variable is set, there is no execo sweep directory,
    and stdin is a pipe or a regular file: not a terminal, and not the
    /dev/null of a batch job, a container without -i or a service, where the
    execo default keeps its meaning.
    """
    environ = os.environ if environ is None else environ
    chosen = ("MINION_ENGINE", "EP", "EXECO_PERSISTENCE_DIR", "FILE_PATH")
    if any(environ.get(name) for name in chosen) or Path("sweeps").exists():
        return settings
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return settings  # no stdin at all
    if not (stat.S_ISFIFO(mode) or stat.S_ISREG(mode)):
        return settings
    kind = "a pipe" if stat.S_ISFIFO(mode) else "a file"
    configure_logging(settings)
    log.info("no MINION_ENGINE and no execo sweep in ./sweeps, and stdin is %s: taking parameters from stdin", kind)
    return dataclasses.replace(settings, engine="file")


def _check_program(program: str) -> None:
    """Fail before taking any parameter when the program cannot be run at all."""
    if os.sep in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise ConfigError("command", program, "expected an executable file")
    elif which(program) is None:
        raise ConfigError("command", program, "command not found in PATH")
