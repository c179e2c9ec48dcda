"""Settings, read once at start-up from the environment, `.env` and `.minionize.yml`.

Precedence, highest first: the real environment, `.env` in the working
directory (python-dotenv, never overriding), the `env:` section of
`.minionize.yml`. Every value is validated here, so that a bad one stops the
minion before it takes anything from the queue (exit code 2).
"""

from __future__ import annotations

import io
import os
import re
import shlex
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from . import exitcodes
from .errors import ConfigError
from .excerpt import safe_text

CONFIG_FILE = ".minionize.yml"
_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}
_YAML_KEYS = {"command", "args", "env"}
#: Slots of one minion: each is a thread, a child process and its pipes, so
#: more than this is a fleet's worth of work that belongs in several minions.
MAX_CONCURRENCY = 1024
#: MINION_IDLE_TIMEOUT's default in batch mode on a broker that cannot tell
#: that its queue is drained (Pub/Sub, Pulsar): twice Pub/Sub's default ack
#: deadline, so that a crashed minion's message is back before the others end.
BATCH_IDLE_TIMEOUT = 120.0
#: Signals that cannot be a drain signal, and why: a handler never runs for
#: them, or the kernel and the process's own children send them for other reasons.
_UNFIT_SIGNALS = {
    "SIGKILL": "cannot be caught", "SIGSTOP": "cannot be caught",
    "SIGCHLD": "is sent each time a run ends", "SIGCONT": "is sent to resume a stopped process",
    "SIGPIPE": "is sent by a write to a closed pipe", "SIGSEGV": "reports a crash",
    "SIGBUS": "reports a crash", "SIGFPE": "reports a crash", "SIGILL": "reports a crash",
    "SIGSYS": "reports a crash", "SIGTRAP": "belongs to debuggers", "SIGABRT": "reports a crash",
    "SIGTTIN": "belongs to the terminal", "SIGTTOU": "belongs to the terminal", "SIGWINCH": "belongs to the terminal",
    "SIGURG": "is sent by sockets",
}


class EnvReader:
    """Typed access to a snapshot of the environment; every error names the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)

    def raw(self, name: str) -> Optional[str]:
        value = self.env.get(name)
        # An empty value (`-e VAR=` in docker, an empty Helm value) means unset.
        return value if value not in (None, "") else None

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        value = self.raw(name)
        return default if value is None else value

    def required(self, name: str, what: str = "a value") -> str:
        value = self.raw(name)
        if value is None:
            raise ConfigError(name, None, f"mandatory for this engine: set it to {what}")
        return value

    def integer(self, name: str, default: int, minimum: int = 0, maximum: Optional[int] = None, why: str = "") -> int:
        """A whole number within [minimum, maximum]; `why` explains the maximum in the error."""
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if number < minimum or (maximum is not None and number > maximum):
            bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}{why}"
            raise ConfigError(name, value, f"expected a whole number {bound}")
        return number

    def seconds(self, name: str, default: Optional[float]) -> Optional[float]:
        """A positive duration in seconds; `0` or `none` disables it where default is None."""
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in ("none", "off") and default is None:
            return None
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if number < 0 or number != number or number == float("inf"):
            raise ConfigError(name, value, "expected a number of seconds >= 0")
        if number == 0 and default is None:
            return None
        return number

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.raw(name)
        if value is None or not value.strip():
            return default  # empty counts as unset, as for every setting
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(name, value, "expected one of 1, true, yes, on, 0, false, no, off")

    def signal(self, name: str, default: Optional[str]) -> Optional[int]:
        """A signal by name (SIGUSR2, USR2) or number; `none` disables it."""
        import signal as signals

        value = self.raw(name) or default
        if value is None or value.lower() in ("none", "off"):
            return None
        text = value.upper()
        try:
            number = signals.Signals(int(text)) if text.isdigit() else signals.Signals[
                text if text.startswith("SIG") else "SIG" + text
            ]
        except (KeyError, ValueError):
            raise ConfigError(name, value, "expected a signal name (SIGUSR2, USR1, ...), a number, or none") from None
        unfit = _UNFIT_SIGNALS.get(number.name)
        if unfit:
            raise ConfigError(name, value, f"{number.name} {unfit}: expected a signal such as SIGUSR2, SIGUSR1, "
                                           "SIGHUP or SIGTERM, or none")
        return int(number)

    def moment(self, name: str) -> Optional[float]:
        """A point in time: seconds from now, or an ISO 8601 date and time (local time if naive)."""
        import time

        value = self.raw(name)
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            import datetime  # only then: it costs 2 ms of start-up

            try:
                return datetime.datetime.fromisoformat(value).timestamp()
            except ValueError:
                raise ConfigError(
                    name, value, "expected seconds from start, or a date and time like 2026-11-21T18:00:00+01:00"
                ) from None
        if seconds < 0 or seconds != seconds:
            raise ConfigError(name, value, "expected seconds from start >= 0")
        return time.time() + seconds

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        value = self.raw(name)
        if value is None:
            return default
        if value not in choices:
            raise ConfigError(name, value, did_you_mean(value, choices))
        return value


def did_you_mean(value: str, choices: Sequence[str]) -> str:
    """The 'accepted' part of an error for a name that is not one of `choices`."""
    import difflib

    accepted = "expected one of " + ", ".join(sorted(choices))
    close = difflib.get_close_matches(value.lower(), list(choices), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? ({accepted})" if close else accepted


@dataclass(frozen=True)
class Settings:
    """The runtime's own settings (engines and reporters read theirs from `env`)."""

    engine: str = "execo"
    reporter: str = "null"
    max_attempts: int = 3
    timeout: Optional[float] = None
    grace_period: float = 25.0
    concurrency: int = 1
    args_template: Optional[str] = None
    dry: bool = False
    idle_timeout: Optional[float] = None
    #: Batch mode (MINION_BATCH): a minion on a broker ends once the queue is
    #: drained, instead of waiting for work until it is stopped.
    batch: bool = False
    #: The broken-node guard (minionize.health): this many fast failures in a
    #: row, on as many parameters, with no success, make a strike (0: never).
    strike_after: int = 10
    #: A failure quicker than this (seconds) counts toward a strike.
    strike_fast: float = 5.0
    #: Seconds without taking after the first strike, doubled at each further one.
    strike_pause: float = 30.0
    #: At this strike the minion gives up (exit code 4).
    max_strikes: int = 3
    #: The signal after which a minion stops taking parameters and exits with
    #: `drain_exit_code` (OAR's checkpoint signal, Slurm's --signal).
    drain_signal: Optional[int] = None
    drain_exit_code: int = 0
    #: Wall-clock time (epoch seconds) after which no new parameter is taken.
    deadline: Optional[float] = None
    #: Serve Prometheus metrics and probes on this port (None: don't).
    metrics_port: Optional[int] = None
    metrics_address: str = "0.0.0.0"
    log_level: str = "INFO"
    #: MINION_LOG_FORMAT: `text` lines for a terminal, or `json`, one object a line (minionize.logs).
    log_format: str = "text"
    #: minionize's credential variables that the wrapped program may see all the same (MINION_PASS_ENV).
    pass_env: tuple[str, ...] = ()
    #: The chosen engine's secret variables (its declaration), kept from the program like the known ones.
    engine_secrets: frozenset[str] = frozenset()
    #: The exit code of a minion that set parameters aside and otherwise ended
    #: normally (MINION_FAILED_EXIT_CODE; 0: exit 0 all the same), as xargs's 123.
    failed_exit_code: int = exitcodes.SET_ASIDE
    #: Keep each run's stdout, stderr and exit code under this directory (MINION_RESULTS).
    results: Optional[str] = None
    #: Prefix each line a run prints with its parameter (MINION_TAG).
    tag: bool = False
    #: The program to minionize, from the command line or `.minionize.yml`.
    command: tuple[str, ...] = ()
    env: EnvReader = field(default_factory=lambda: EnvReader({}), compare=False, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str], command: Sequence[str] = ()) -> Settings:
        reader = EnvReader(env)
        template = reader.get("MINION_ARGS")
        if template is not None:
            _check_template(template)
        return cls(
            engine=_engine_name(reader.get("MINION_ENGINE") or reader.get("EP") or "execo"),
            reporter=(reader.get("MINION_REPORTER") or "null").lower(),
            max_attempts=reader.integer("MINION_MAX_ATTEMPTS", 3, minimum=1),
            timeout=reader.seconds("MINION_TIMEOUT", None),
            grace_period=reader.seconds("MINION_GRACE_PERIOD", 25.0) or 0.0,
            concurrency=reader.integer(
                "MINION_CONCURRENCY", 1, minimum=1, maximum=MAX_CONCURRENCY,
                why=" (a thread and a process per slot: start more minions for more)",
            ),
            args_template=template,
            dry=reader.flag("MINION_DRY", False) or reader.flag("DRY", False),
            idle_timeout=reader.seconds("MINION_IDLE_TIMEOUT", None),
            batch=reader.flag("MINION_BATCH", False),
            strike_after=reader.integer("MINION_STRIKE_AFTER", 10, minimum=0),
            strike_fast=reader.seconds("MINION_STRIKE_FAST", 5.0) or 0.0,
            strike_pause=_strike_pause(reader),
            max_strikes=reader.integer("MINION_MAX_STRIKES", 3, minimum=1),
            drain_signal=reader.signal("MINION_DRAIN_SIGNAL", "SIGUSR2"),
            drain_exit_code=_exit_code(reader, "MINION_DRAIN_EXIT_CODE", 0),
            failed_exit_code=_exit_code(reader, "MINION_FAILED_EXIT_CODE", exitcodes.SET_ASIDE),
            results=reader.get("MINION_RESULTS"),
            tag=reader.flag("MINION_TAG", False),
            deadline=reader.moment("MINION_DEADLINE"),
            metrics_port=_port(reader, "MINION_METRICS_PORT"),
            metrics_address=reader.get("MINION_METRICS_ADDRESS", "0.0.0.0") or "0.0.0.0",
            pass_env=tuple(n.strip() for n in (reader.get("MINION_PASS_ENV") or "").split(",") if n.strip()),
            log_level=reader.choice(
                "MINION_LOG_LEVEL",
                "INFO",
                ["DEBUG", "INFO", "WARNING", "ERROR"],
            ),
            log_format=reader.choice("MINION_LOG_FORMAT", "text", ["text", "json"]),
            command=tuple(command),
            env=reader,
        )


def _engine_name(value: str) -> str:
    """An engine's name, in any case (`Redis`); a `module:Class` keeps its case."""
    return value if ":" in value else value.lower()


def _port(reader: EnvReader, name: str) -> Optional[int]:
    if reader.raw(name) is None:
        return None
    port = reader.integer(name, 0, minimum=0)
    if port > 65535:
        raise ConfigError(name, reader.raw(name), "expected a TCP port, 0 to 65535 (0: any free port)")
    return port


def _strike_pause(reader: EnvReader) -> float:
    from .health import MAX_PAUSE

    pause = reader.seconds("MINION_STRIKE_PAUSE", 30.0) or 0.0
    if pause > MAX_PAUSE:  # it would be cut to that silently
        raise ConfigError("MINION_STRIKE_PAUSE", reader.raw("MINION_STRIKE_PAUSE"),
                          f"at most {MAX_PAUSE:g} seconds (the longest pause of a strike, doubled or not)")
    return pause


def _exit_code(reader: EnvReader, name: str, default: int) -> int:
    return reader.integer(name, default, minimum=0, maximum=255)


def _check_template(template: str) -> None:
    import string

    try:
        fields = [(name, conversion) for token in shlex.split(template)
                  for _, name, _, conversion in string.Formatter().parse(token) if name is not None]
    except ValueError as exc:
        raise ConfigError("MINION_ARGS", template, f"not a valid template ({exc})") from None
    for name, conversion in fields:
        first = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not first or first.isdigit():
            # `{}` is GNU parallel's whole parameter: said here, or every parameter is set aside.
            raise ConfigError("MINION_ARGS", template, f"{{{name}}} is a positional field: name a key of the "
                              "parameter, {lr}, or write {param} for the whole parameter")
        if conversion not in (None, "r", "s", "a"):
            raise ConfigError("MINION_ARGS", template, f"not a valid template (conversion !{conversion} in "
                              f"{{{name}}}: expected !r, !s or !a)")


def load_environment(
    environ: MutableMapping[str, str], cwd: Optional[Path] = None
) -> tuple[str, ...]:
    """Merge `.env` and `.minionize.yml` into `environ` without overriding it.

    Returns the command found in `.minionize.yml` (empty when there is none).
    `environ` is normally `os.environ`, so that the wrapped program and the
    client libraries (which read e.g. PUBSUB_EMULATOR_HOST themselves) see the
    same values as minionize.
    """
    cwd = cwd or _working_directory()
    _read_dotenv(environ, cwd / ".env")
    config_path = Path(environ.get("MINION_CONFIG") or cwd / CONFIG_FILE)
    if not config_path.is_file():
        if environ.get("MINION_CONFIG"):
            raise ConfigError("MINION_CONFIG", str(config_path), "expected an existing file")
        return ()
    data = _read_yaml(config_path)
    for key, value in (data.get("env") or {}).items():
        _set_default(environ, config_path, str(key), _yaml_scalar(config_path, key, value))
    if data.get("args") is not None:
        _set_default(environ, config_path, "MINION_ARGS", _yaml_args(config_path, data["args"]))
    return _yaml_command(config_path, data.get("command"))


def _working_directory() -> Path:
    try:
        return Path.cwd()
    except FileNotFoundError:
        raise ConfigError("the working directory", None, "it no longer exists (deleted since the shell "
                          "entered it): cd to one that does") from None


def _read_dotenv(environ: MutableMapping[str, str], path: Path) -> None:
    """Merge `.env` (python-dotenv's syntax) into `environ`, without overriding it."""
    if not path.is_file():
        return
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), None, f"could not read it ({exc})") from None
    # python-dotenv skips a line it cannot parse, with a warning: the minion would then run,
    # and take its whole queue, without the setting the line meant to give.
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            line = binding.original.string.rstrip("\r\n")
            raise ConfigError(f"{path}, line {binding.original.line}", safe_text(line, 200),
                              "not NAME=value (python-dotenv's syntax: quotes closed, no space in NAME)")
    values = dotenv_values(stream=io.StringIO(text))
    for key, value in values.items():
        if value is not None:
            _set_default(environ, path, key, value)


def _set_default(environ: MutableMapping[str, str], path: Path, key: str, value: str) -> None:
    """`environ.setdefault(key, value)`, where what no environment can hold (a NUL, a name with `=`) is
    an error of the file that says it."""
    if not key:
        raise ConfigError(f"{path}: {key!r}", value, "no environment variable has an empty name")
    try:
        environ.setdefault(key, value)
    except (ValueError, OSError) as exc:  # os.environ refuses it
        raise ConfigError(f"{path}: {key!r}", value, f"no environment variable can hold it ({exc})") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    where = str(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_strings_loader())  # noqa: S506 - safe
    except RecursionError:
        raise ConfigError(where, None, "could not read it as YAML (nested too deeply)") from None
    # ValueError, TypeError: PyYAML's constructors on odd documents (a mapping as a key).
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(where, None, f"could not read it as YAML ({reason})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(where, None, "expected a mapping with keys command, args, env")
    unknown = set(map(str, data)) - _YAML_KEYS
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigError(f"{where}: key {name!r}", data[name], did_you_mean(name, list(_YAML_KEYS)))
    if not isinstance(data.get("env") or {}, dict):
        raise ConfigError(f"{where}: env", data.get("env"), "expected a mapping of VARIABLE: value")
    return data


def _strings_loader() -> type:
    """PyYAML's safe loader, but a scalar stays the text written, as in an environment: `off` is not
    `false`, a date (MINION_DEADLINE's) is not a datetime, `18:00` is not 1,080 (YAML 1.1's base 60).
    Only `~` and an empty value are null."""
    import yaml

    class Strings(yaml.SafeLoader):
        pass

    null = "tag:yaml.org,2002:null"
    Strings.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag == null]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return Strings


def _yaml_scalar(path: Path, key: object, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, (str, int, float)):
        return "" if value is None else str(value)
    raise ConfigError(f"{path}: env.{key}", value, "expected a string or a number")


def _yaml_args(path: Path, args: object) -> str:
    """`args:`, the MINION_ARGS template: a string, or a list of its words."""
    if isinstance(args, str):
        return args
    if isinstance(args, list) and all(isinstance(x, str) for x in args):
        return shlex.join(args)
    raise ConfigError(f"{path}: args", args, "expected a string (--lr {lr}) or a list of strings")


def _yaml_command(path: Path, command: object) -> tuple[str, ...]:
    if command is None:
        return ()
    if isinstance(command, str):
        try:
            words = tuple(shlex.split(command))
        except ValueError as exc:
            raise ConfigError(f"{path}: command", command, f"not valid ({exc})") from None
    elif isinstance(command, list) and all(isinstance(x, (str, int, float)) and not isinstance(x, bool)
                                           for x in command):
        words = tuple(str(x) for x in command)
    else:
        raise ConfigError(f"{path}: command", command, "expected a string or a list of strings")
    if any("\0" in word for word in words):
        raise ConfigError(f"{path}: command", command, "no program takes a NUL character in its command line")
    return words


def load(argv_command: Sequence[str] = (), environ: Optional[MutableMapping[str, str]] = None) -> Settings:
    """The settings of a minion started from the command line (or `minionizer()`)."""
    environ = os.environ if environ is None else environ
    file_command = load_environment(environ)
    return Settings.from_env(environ, tuple(argv_command) or file_command)
