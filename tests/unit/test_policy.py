"""minionize.policy.decide: the one table of what happens to a message after its run."""

from __future__ import annotations

import json

import pytest

from minionize.message import Outcome
from minionize.policy import Decision, Verdict, decide

OK, FAIL = Outcome.success(), Outcome.failure("exit code 1", exit_code=1)
STOPPED, BAD = Outcome.interrupted(), Outcome.rejected("unbalanced quotes")


@pytest.mark.parametrize(
    "outcome, attempt, give_back, dry, expected",
    [
        (OK, 1, False, False, Decision(Verdict.ACKED)),
        (OK, 3, True, False, Decision(Verdict.ACKED)),  # a success is a success, strike or not
        (FAIL, 1, False, False, Decision(Verdict.RETRIED)),
        (FAIL, 2, False, False, Decision(Verdict.RETRIED)),
        (FAIL, 3, False, False, Decision(Verdict.FAILED, "exit code 1 (attempt 3 of 3)")),
        (FAIL, 7, False, False, Decision(Verdict.FAILED, "exit code 1 (attempt 7 of 3)")),
        (FAIL, 3, True, False, Decision(Verdict.RELEASED)),  # the node's fault, not the parameter's
        (STOPPED, 3, False, False, Decision(Verdict.RELEASED)),  # a stop costs no attempt
        (BAD, 1, False, False, Decision(Verdict.FAILED, "unbalanced quotes")),  # never worth a retry
        (FAIL, 1, False, True, Decision(Verdict.HELD)),
        (OK, 1, False, True, Decision(Verdict.HELD)),
    ],
)
def test_the_verdict_table(outcome: Outcome, attempt: int, give_back: bool, dry: bool, expected: Decision) -> None:
    assert decide(outcome, attempt, 3, give_back, dry) == expected


def test_each_settling_verdict_names_an_engine_verb() -> None:
    assert {v: Decision(v).verb for v in Verdict} == {
        Verdict.ACKED: "ack", Verdict.RETRIED: "nack", Verdict.FAILED: "fail", Verdict.RELEASED: "release",
        Verdict.HELD: None, Verdict.UNSETTLED: None,
    }


def test_a_verdict_is_its_plain_word_in_logs_and_reports() -> None:
    assert f"{Verdict.RETRIED}" == "retried" and str(Verdict.FAILED) == "failed"
    assert json.dumps({"verdict": Verdict.ACKED}) == '{"verdict": "acked"}'


def test_a_reason_a_broker_cannot_take_is_made_safe() -> None:
    decision = decide(Outcome.failure("bad \udcff bytes \x00 here"), 3, 3)
    assert decision.reason is not None
    decision.reason.encode("utf-8")  # no lone surrogate left
