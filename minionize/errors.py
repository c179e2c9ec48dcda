"""Exceptions that the command line turns into one-line messages and exit codes."""

from __future__ import annotations


class MinionizeError(Exception):
    """Base class of the errors minionize reports without a traceback."""


class ConfigError(MinionizeError):
    """A setting is missing or has a value that is not accepted (exit code 2)."""

    def __init__(self, variable: str, value: object, accepted: str) -> None:
        self.variable = variable
        self.value = value
        self.accepted = accepted
        if value is None and not variable.replace("_", "").replace("-", "").isalnum():
            super().__init__(f"{variable}: {accepted}")  # a file, a place: not a setting left unset
            return
        shown = "(unset)" if value is None else repr(value)
        super().__init__(f"{variable}={shown}: {accepted}")


class QueueUnreachable(MinionizeError):
    """The engine could not connect to its queue at start-up (exit code 3)."""


class MissingExtra(ConfigError):
    """The chosen engine or callback needs an optional package that is not installed."""

    def __init__(self, variable: str, value: str, extra: str, module: str) -> None:
        super().__init__(
            variable,
            value,
            f"needs the Python package {module!r}: pip install 'minionize[{extra}]'",
        )
