"""What happens to a message once its run is over: the one decision, and its vocabulary.

`decide` is pure: an outcome, an attempt count and the settings give a
`Verdict` (the word logs, reports and metrics all use) and the engine verb
that carries it out. The worker alone calls it, and alone calls the engine.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from .excerpt import safe_text
from .message import Outcome, Status


class Verdict(str, enum.Enum):
    """What was done with a message; a `str`, so that reports and JSON carry the plain word."""

    ACKED = "acked"  # the run succeeded: removed from the queue
    RETRIED = "retried"  # failed, given back for another attempt (nack)
    FAILED = "failed"  # set aside for good (dead letter), with the reason
    RELEASED = "released"  # given back without counting an attempt (a stop, a strike)
    HELD = "held"  # a dry run: shown, given back at the end
    UNSETTLED = "unsettled"  # the engine's verb failed: left to the broker's redelivery

    def __str__(self) -> str:
        return self.value


#: The engine verb of each verdict that settles a message (HELD and UNSETTLED call none).
VERB = {
    Verdict.ACKED: "ack", Verdict.RETRIED: "nack", Verdict.FAILED: "fail", Verdict.RELEASED: "release",
}


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    #: Why it was set aside (FAILED only): the run's error, made safe for any broker.
    reason: Optional[str] = None

    @property
    def verb(self) -> Optional[str]:
        return VERB.get(self.verdict)


def decide(outcome: Outcome, attempt: int, max_attempts: int, give_back: bool = False, dry: bool = False) -> Decision:
    """The verdict on a finished run.

    `give_back`: the broken-node guard holds this failure against the node,
    not the parameter. A rejected parameter (it cannot run, whatever the
    attempt) and the last allowed attempt are set aside; an interrupted run
    costs no attempt.
    """
    if dry:
        return Decision(Verdict.HELD)
    if outcome.ok:
        return Decision(Verdict.ACKED)
    if outcome.status is Status.INTERRUPTED or give_back:
        return Decision(Verdict.RELEASED)
    if outcome.status is Status.REJECTED or attempt >= max_attempts:
        # A broker refuses what UTF-8 cannot encode, and a user's callback may say anything.
        reason = safe_text(outcome.error or "failed")
        if outcome.status is not Status.REJECTED:
            reason = f"{reason} (attempt {attempt} of {max_attempts})"
        return Decision(Verdict.FAILED, reason)
    return Decision(Verdict.RETRIED)
