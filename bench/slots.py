"""Broker engines with slots: a minion of MINION_CONCURRENCY=8 against the bare one-at-a-time loop.

On Redis (XREADGROUP COUNT 1 + XACK) and RabbitMQ (classic queue, basic_get +
basic_ack), 20,000 messages into a no-op function (--quick: 2,000), the
contenders of bench/throughput.py measured in turns, best of 3. The minion
takes a message per free slot and never more: one XREADGROUP for all of
them on Redis, a prefetch of its slots on RabbitMQ.
Target: at least the bare loop's rate.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from common import table, verdict
from throughput import SLOTS, _fmt, amqp_contenders, redis_contenders


def run(count: int = 20_000, repeat: int = 3, quick: bool = False) -> str:
    if quick:
        count, repeat = 2_000, 1
    work = Path(tempfile.mkdtemp(prefix="bench-slots-"))
    contenders = {"redis": redis_contenders(work, count), "amqp": amqp_contenders(work, count)}
    best: dict[tuple[str, str], float] = {}
    try:
        for round_ in range(repeat):
            for broker, measures in contenders.items():
                for name in ("bare", "minionize", "minionize 8 slots"):
                    rate = measures[name](f"bench-slots-{os.getpid()}-{round_}-{broker}-{name.replace(' ', '-')}")
                    best[broker, name] = max(best.get((broker, name), 0.0), rate)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for broker, loop in (("redis", "XREADGROUP COUNT 1 + XACK"), ("amqp", "classic queue, basic_get + basic_ack")):
        bare, one, slots = best[broker, "bare"], best[broker, "minionize"], best[broker, "minionize 8 slots"]
        rows += [
            (f"{broker}: bare loop, {loop}, one at a time", _fmt(bare), "reference", ""),
            (f"{broker}: minionize, 1 slot", _fmt(one), f"{one / bare:.2f}x the bare loop", ""),
            (f"{broker}: minionize, MINION_CONCURRENCY={SLOTS}", _fmt(slots), f"{slots / bare:.2f}x the bare loop",
             f">= 1x bare: {verdict(slots >= bare)}"),
        ]
    return table(f"Broker engines with slots: {count:,} messages into a no-op function (best of {repeat}, in turns)",
                 rows)


if __name__ == "__main__":
    print(run())
