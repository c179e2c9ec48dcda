"""What flows through a minion: a Message from an engine, an Outcome from a callback."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional

#: A parameter as the user sees it: a string, a number, a list, a dict...
Param = Any


@dataclass
class Message:
    """One parameter taken from a queue, with what its engine needs to settle it."""

    id: str
    param: Param
    #: 1 for the first delivery, 2 for the first retry, and so on.
    attempt: int = 1
    #: Engine-private handle (a delivery tag, an ack id...): never read by the worker.
    handle: Any = field(default=None, repr=False)
    #: Set by the engine when the body could not be decoded: the message is
    #: set aside with this reason, and the program never runs.
    reject_reason: Optional[str] = None
    #: Set by the engine when the message was taken back from a minion that died.
    reclaimed: bool = False


class Status(enum.Enum):
    """How a run ended, as decided by the callback."""

    SUCCESS = "success"
    #: The run failed; another attempt may succeed (non-zero exit, exception, timeout).
    FAILURE = "failure"
    #: The parameter can never succeed as given (undecodable, unbalanced quotes...):
    #: set it aside at once, whatever the attempts left.
    REJECTED = "rejected"
    #: The run was stopped by the minion itself (warm or cold stop): give it back.
    INTERRUPTED = "interrupted"


@dataclass
class Outcome:
    """The result of one run of a callback over one message."""

    status: Status
    exit_code: Optional[int] = None
    #: A one-line reason for anything but a success.
    error: Optional[str] = None
    #: The signal that killed the program, when one did.
    signal: Optional[int] = None
    timed_out: bool = False
    #: The last bytes of the program's output, for reports (size-capped).
    stdout_tail: str = ""
    stderr_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.status is Status.SUCCESS

    @classmethod
    def success(cls, exit_code: Optional[int] = 0) -> Outcome:
        return cls(Status.SUCCESS, exit_code=exit_code)

    @classmethod
    def failure(cls, error: str, exit_code: Optional[int] = None, **kw: Any) -> Outcome:
        return cls(Status.FAILURE, exit_code=exit_code, error=error, **kw)

    @classmethod
    def rejected(cls, error: str) -> Outcome:
        return cls(Status.REJECTED, error=error)

    @classmethod
    def interrupted(cls, error: str = "stopped by the minion", **kw: Any) -> Outcome:
        return cls(Status.INTERRUPTED, error=error, **kw)
