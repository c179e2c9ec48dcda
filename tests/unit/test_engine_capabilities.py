"""What an engine promises is declared once, on its class: the contract backends agree.

The process contract and the fault suite judge each engine by its backend
(tests/integration/backends); a backend that expected more or less than its
engine declares (a redelivery, a free release, a deadline...) would test a
promise nobody made, or skip one that was.
"""

from __future__ import annotations

import pytest

from minionize.registry import ENGINES, engine_class
from tests.integration.backends import BACKENDS, engine_of, load

#: Backend attribute -> the engine's declaration it must equal.
AGREE = {
    "drains": "tells_drained",
    "input_ends": "input_ends",
    "survives_kill": "redelivers",
    "dead_letter_reason": "keeps_reason",
    "has_deadline": "has_deadline",
    "ack_delay": "ack_delay",
}


@pytest.mark.parametrize("name", list(BACKENDS))
def test_a_backend_expects_what_its_engine_declares(name: str) -> None:
    backend, engine = load(name), engine_class(engine_of(name))
    for expected, declared in AGREE.items():
        assert getattr(backend, expected) == getattr(engine, declared), f"{name}: {expected} vs {declared}"


def test_every_engine_but_memory_has_a_contract_backend() -> None:
    # memory keeps its queue in one process: the in-process API suite covers it.
    assert {engine_of(name) for name in BACKENDS} == set(ENGINES) - {"memory"}
