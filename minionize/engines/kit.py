"""The engine kit: what an engine declares about its settings, and what is made of it.

An engine lists its variables once, as `Setting`s in its class's `settings`
(name, type, default, whether it is a secret, one line of doc, and how the
Helm chart sets it). From that one list come: `read_settings` (the typed
values, with errors that name the variable), the README's variable block
(`python -m minionize.engines readme` prints it; a test keeps the README
equal to it), and the checks that the engine's docstring, the chart's
values and the credential filter of the program's environment agree with it.

A plain frozen dataclass of the standard library rather than a settings
library: reading the declarations costs a minion's start-up nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Optional

from ..config import EnvReader
from ..errors import ConfigError

#: The types a setting may have, and how the README shows them.
KINDS = ("text", "url", "path", "seconds", "integer", "flag", "choice")
#: What the README shows as the value of a mandatory variable (as the original README did).
MANDATORY = "/mandatory/"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment variable an engine reads."""

    name: str
    kind: str
    doc: str
    #: The value when unset (None: no value, the engine does without).
    default: Any = None
    required: bool = False
    #: A credential: masked where shown, and kept from the program's environment.
    secret: bool = False
    choices: tuple[str, ...] = ()
    #: Inclusive bounds (integer, seconds); `above` is an exclusive lower bound.
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    above: Optional[float] = None
    #: What the README shows when the default is computed (`<stream>:dead`).
    shown: Optional[str] = None
    #: How the chart sets it: the values key under the engine's section
    #: (default: the name after the prefix, in camelCase), "secret:KEY" (from
    #: an existing Secret), "file:KEY" (a file mounted from a Secret), or ""
    #: when the chart does not set it (`chart_why` says why, in values.yaml too).
    chart: Optional[str] = None
    chart_why: str = ""
    #: A valid value other than the default, where none can be made from the
    #: default (no default: `postgresql://minion@postgres:5432/sweeps`); the tests set it.
    example: Any = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not one of {KINDS}")
        if self.chart == "" and not self.chart_why:
            raise ValueError(f"{self.name}: a setting the chart does not set needs chart_why")

    def read(self, env: EnvReader) -> Any:
        """The typed value from `env`; raises ConfigError naming the variable."""
        if self.required:
            env.required(self.name, self.doc)
        if self.kind == "flag":
            return env.flag(self.name, bool(self.default))
        if self.kind == "choice":
            return env.choice(self.name, self.default, self.choices)
        if self.kind == "integer":
            low = int(self.minimum) if self.minimum is not None else 0
            high = int(self.maximum) if self.maximum is not None else None
            return env.integer(self.name, self.default, minimum=low, maximum=high)
        if self.kind == "seconds":
            return self._seconds(env)
        return env.get(self.name, self.default)

    def _seconds(self, env: EnvReader) -> Optional[float]:
        value = env.seconds(self.name, self.default)
        if value is None:
            return None
        low_ok = self.minimum is None or value >= self.minimum
        above_ok = self.above is None or value > self.above
        high_ok = self.maximum is None or value <= self.maximum
        if not (low_ok and above_ok and high_ok):
            raise ConfigError(self.name, env.raw(self.name), f"expected a number of seconds {self.bounds()}")
        return value

    def bounds(self) -> str:
        """The accepted range in words ("> 0", ">= 1", "10 to 600")."""
        if self.minimum is not None and self.maximum is not None:
            return f"from {_number(self.minimum)} to {_number(self.maximum)}"
        if self.above is not None:
            return f"> {_number(self.above)}"
        if self.minimum is not None:
            return f">= {_number(self.minimum)}"
        return ">= 0"

    @property
    def shown_default(self) -> str:
        """The default as the README writes it after `NAME=`."""
        if self.required:
            return MANDATORY
        if self.shown is not None:
            return self.shown
        if self.default is None:
            return ""
        if isinstance(self.default, bool):
            return "1" if self.default else "0"
        return _number(self.default) if isinstance(self.default, float) else str(self.default)

    def chart_key(self, prefix: str) -> str:
        """The values key of the chart under the engine's section ("" when the chart does not set it)."""
        if self.chart is not None:
            return self.chart
        words = self.name[len(prefix):].lower().split("_") if self.name.startswith(prefix) else [self.name]
        return words[0] + "".join(word.capitalize() for word in words[1:])


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def read_settings(env: EnvReader, settings: Iterable[Setting]) -> dict[str, Any]:
    """Every setting's typed value, by variable name."""
    return {setting.name: setting.read(env) for setting in settings}


def secret_names(settings: Iterable[Setting]) -> frozenset[str]:
    return frozenset(setting.name for setting in settings if setting.secret)


# --- a lost connection ------------------------------------------------------


class ConnectionGuard:
    """What a broker engine does when its server goes away, written once.

    Inside `with guard("ack"):`, an error among the engine's declared
    `connection_errors` becomes the ConnectionError that the worker logs and
    retries after a jittered backoff; `on_lost` drops what the engine held,
    so that its next call connects again. A call that failed only after the
    whole operation timeout (a server that accepts and never answers) makes
    the calls of the next timeout fail at once: a stop must not wait for
    each of them. It also calls `on_silent`, for an engine whose client
    keeps its connections itself: that connection may be half-open (a cut
    that dropped packets without a reset), and TCP would resume it only at
    its next retransmission, backed off to 13 to 26 s after a 30 s cut; the
    engine drops it and connects anew instead.
    """

    def __init__(
        self, where: str, errors: tuple[type[BaseException], ...], timeout: float,
        on_lost: Optional[Callable[[], None]] = None, why: Optional[Callable[[BaseException], str]] = None,
        on_silent: Optional[Callable[[], None]] = None,
    ) -> None:
        self.where, self.errors, self.timeout, self.on_lost = where, errors, timeout, on_lost
        self.on_silent = on_silent
        #: How an error is said in one line (the client's own text, by default its first line).
        self.why = why or _first_line
        self.silent_until = 0.0

    def silence(self) -> None:
        """The server left a call unanswered: the next calls of one timeout fail at once."""
        self.silent_until = time.monotonic() + self.timeout

    @property
    def silent(self) -> bool:
        return time.monotonic() < self.silent_until

    @contextlib.contextmanager
    def __call__(self, doing: str, wait: float = 0.0) -> Iterator[None]:
        """`wait`: how long the calls inside may rightly wait (a blocking read), on top of the timeout."""
        if self.silent:
            raise ConnectionError(f"{self.where}: {doing} not tried: no answer within {self.timeout:g}s")
        started = time.monotonic()
        try:
            yield
        except self.errors as exc:
            if self.on_lost is not None:
                self.on_lost()
            if time.monotonic() - started >= wait + self.timeout:
                self.silence()
                if self.on_silent is not None:
                    self.on_silent()
            raise ConnectionError(f"{self.where}: {doing} failed: {self.why(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- the dead-letter metadata ---------------------------------------------

#: Why a parameter was set aside, its attempt count (decimal text), and the
#: queue it came from: under these names on every broker, whether the broker
#: calls them headers (RabbitMQ), attributes (Pub/Sub), properties (Pulsar)
#: or fields (a Redis stream entry).
DEAD_REASON, DEAD_ATTEMPTS, DEAD_SOURCE = "minion_reason", "minion_attempts", "minion_source"


def dead_letter_metadata(reason: str, attempts: int, source: str) -> dict[str, str]:
    """What a dead letter carries besides the parameter, on every broker."""
    return {DEAD_REASON: reason, DEAD_ATTEMPTS: str(attempts), DEAD_SOURCE: source}


# --- the README's variable block ------------------------------------------

#: The column where the README's comments start.
_COMMENT_COLUMN = 29


def readme_lines(title: str, settings: Sequence[Setting]) -> list[str]:
    """One engine's part of the README's variable block: a title line, then `NAME=default  # doc`."""
    lines = [f"# {title}"]
    for setting in settings:
        assignment = f"{setting.name}={setting.shown_default}"
        lines.append(f"{assignment.ljust(_COMMENT_COLUMN - 1)} # {setting.doc}".rstrip())
    return lines


def readme_block(engines: Sequence[Any]) -> str:
    """The README's block of engine variables, for engine classes in registry order."""
    parts = ["\n".join(readme_lines(engine.title, engine.settings)) for engine in engines if engine.settings]
    return "\n\n".join(parts) + "\n"


# --- the docstring's Environment section ----------------------------------

_SECTION = re.compile(r"^Environment\n(?P<body>.*?)(?=^\S|\Z)", re.S | re.M)
_VARIABLE = re.compile(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9]\b")


def documented_variables(docstring: str) -> set[str]:
    """The variable names that a module docstring's Environment section mentions."""
    match = _SECTION.search(docstring)
    return set(_VARIABLE.findall(match.group("body"))) if match else set()


def all_engine_classes() -> list[Any]:
    """Every in-tree engine class, in registry order (imports every engine's client)."""
    from ..registry import ENGINES, engine_class

    return [engine_class(name) for name in ENGINES]
