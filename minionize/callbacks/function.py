"""Run a Python function for each parameter, in the minion's own process."""

from __future__ import annotations

import logging
import traceback
from typing import Any, Callable

from ..config import Settings
from ..excerpt import safe_text
from ..logs import run_extra
from ..message import Message, Outcome, Param
from .base import Callback, RunContext, describe_param

log = logging.getLogger(__name__)


class FuncCallback(Callback):
    """Calls `func(param)`.

    Returning normally is a success, whatever the value; raising, or
    returning exactly False, is a failure that will be retried. A
    Python function cannot be interrupted: MINION_TIMEOUT is not enforced for
    it, and a stop lets it finish within the grace period or gives its
    parameter back when the minion exits.
    """

    cancellable = False

    def __init__(self, func: Callable[[Param], Any]) -> None:
        self.func = func

    def setup(self, settings: Settings) -> None:
        if settings.timeout is not None:
            log.warning(
                "MINION_TIMEOUT=%g is not enforced for a Python function "
                "(a thread cannot be killed); use a ProcessCallback to enforce it",
                settings.timeout,
            )

    def run(self, message: Message, context: RunContext) -> Outcome:
        if context.dry:
            print(f"DRY: {getattr(self.func, '__name__', self.func)}({describe_param(message.param)})", flush=True)
            return Outcome.success(None)
        try:
            result = self.func(message.param)
        except Exception as exc:  # the user's code: any failure is an outcome
            # The worker's line gives the last line only: where it happened is in the traceback.
            log.warning("%s raised on %s", getattr(self.func, "__name__", "the function"),
                        describe_param(message.param), exc_info=True,
                        extra=run_extra(message.id, message.param, message.attempt))
            # The error may quote the parameter: bounded, and UTF-8 for the brokers' dead letters.
            return Outcome.failure(_error_line(exc), stderr_tail=safe_text(traceback.format_exc()[-4096:], 4096))
        if result is False:
            return Outcome.failure("function returned False", exit_code=1)
        return Outcome.success(0)


def _error_line(exc: Exception) -> str:
    """The last line of the exception's text ("ValueError: ..."), printable and bounded."""
    try:
        line = traceback.format_exception_only(type(exc), exc)[-1].strip()
    except Exception:  # an exception whose __str__ raises in turn
        line = type(exc).__name__
    return safe_text(line, 1000)
