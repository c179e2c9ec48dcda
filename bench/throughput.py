"""Broker throughput: 20,000 messages into a no-op Python function, on Redis, RabbitMQ and NATS JetStream.

Each contender is one consumer process with one message in flight, timed
from `go` to its last message (bench/consumer.py); queues are filled before
the clock starts. Measured back to back, per broker:

- a bare client loop that takes and acks one message at a time (redis-py
  XREADGROUP COUNT 1 + XACK; pika basic_get + basic_ack): the semantics
  minionize keeps, since a minion never holds a message it is not running
  (minionize's ack also XDELs the entry, in the same round trip);
- the same loop batched (COUNT 100; basic_consume with prefetch 100): an
  upper bound for a consumer that may hold messages it is not running;
- minionize's redis or amqp engine through the Python API (FuncCallback,
  MINION_CONCURRENCY=1);
- Dramatiq on the same server: one Worker, one thread (so prefetch 2);
- on RabbitMQ, minionize again with AMQP_PREFETCH=2, Dramatiq's prefetch:
  it consumes instead of getting, and may hold a message it is not running.

Dramatiq declares classic RabbitMQ queues, and the queue type alone changes
basic_get's rate several times: minionize and the bare loop are measured on a
classic queue (AMQP_QUEUE_TYPE=classic) for the comparison with Dramatiq,
and on a quorum queue, minionize's default, against the bare loop alone.
On NATS JetStream, minionize is set against a bare nats-py pull loop
(fetch(1) + ack, one at a time), and against the same loop driven from the
main thread through an event loop thread, as the engine drives nats-py (an
asyncio-only client): the difference is what that thread costs.
On PostgreSQL, minionize is set against a bare psycopg loop that takes the
first pending row with SELECT ... FOR UPDATE SKIP LOCKED in a transaction
(its row lock stands for a lease), marks it done and commits.
Targets: minionize at least half the bare one-at-a-time loop's rate, and
ahead of Dramatiq.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import env, table, verdict
from consumer import AMQP_URL, NATS_URL, POSTGRES_URL, REDIS_URL, Run, launch

MESSAGES = 20_000
SLOTS = 8  # the slots of a minion set against the one-at-a-time loops (issue 14)
Measure = Callable[[str], float]  # a fresh queue name -> messages per second


def _rate(run: Run, expected: int) -> float:
    if run.count != expected:
        raise SystemExit(f"processed {run.count} messages of {expected}")
    return run.count / run.seconds


# -- Redis -------------------------------------------------------------------------


def fill_stream(stream: str, count: int) -> None:
    """XADD the messages (pipelined) and create the group, as minion-push does."""
    from minionize.engines.redis import RedisEngine

    engine = RedisEngine(stream, url=REDIS_URL)
    try:
        engine.push([str(i) for i in range(count)])
    finally:
        engine.close()


def drop_keys(pattern: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=pattern, count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def redis_contenders(work: Path, count: int) -> dict[str, Measure]:
    def on_stream(kind: str, **more: str) -> Measure:
        def measure(name: str) -> float:
            fill_stream(name, count)
            try:
                extra = {"MINION_ENGINE": "redis", "REDIS_URL": REDIS_URL, "REDIS_STREAM": name, **more}
                return _rate(launch([([kind, name, str(count)], env(**extra))], work), count)
            finally:
                drop_keys(f"{name}*")

        return measure

    def dramatiq(name: str) -> float:
        try:
            return _rate(launch([(["dramatiq-redis", name, str(count)], env())], work), count)
        finally:
            drop_keys(f"{name}:*")

    return {"bare": on_stream("redis-bare"), "batch": on_stream("redis-batch"),
            "minionize": on_stream("minion"), "dramatiq": dramatiq,
            "minionize 8 slots": on_stream("minion", MINION_CONCURRENCY=str(SLOTS))}


# -- RabbitMQ ------------------------------------------------------------------------


def fill_queue(queue: str, count: int, queue_type: str) -> None:
    """Declare the queues as minionize does, publish persistent messages, wait until all are in."""
    import pika

    from minionize.engines.amqp import AmqpEngine

    engine = AmqpEngine(queue, AMQP_URL, queue_type=queue_type)
    engine.open()
    engine.close()
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    for i in range(count):
        properties = pika.BasicProperties(delivery_mode=2, content_type="text/plain", message_id=f"{queue}-{i}")
        channel.basic_publish("", queue, str(i).encode(), properties)
    deadline = time.monotonic() + 60
    while channel.queue_declare(queue, passive=True).method.message_count < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"RabbitMQ did not take the {count} messages for {queue}")
        connection.sleep(0.1)
    connection.close()


def delete_queues(*queues: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    for queue in queues:
        channel.queue_delete(queue)
    connection.close()


def amqp_contenders(work: Path, count: int) -> dict[str, Measure]:
    def on_queue(kind: str, queue_type: str, **more: str) -> Measure:
        def measure(name: str) -> float:
            fill_queue(name, count, queue_type)
            try:
                extra = {"MINION_ENGINE": "amqp", "AMQP_URL": AMQP_URL, "AMQP_QUEUE": name,
                         "AMQP_QUEUE_TYPE": queue_type, **more}
                return _rate(launch([([kind, name, str(count)], env(**extra))], work), count)
            finally:
                delete_queues(name, f"{name}.dead", f"{name}.in-flight")

        return measure

    def dramatiq(name: str) -> float:
        try:
            return _rate(launch([(["dramatiq-amqp", name, str(count)], env())], work), count)
        finally:
            delete_queues(name, f"{name}.DQ", f"{name}.XQ")

    return {"bare": on_queue("amqp-bare", "classic"), "batch": on_queue("amqp-batch", "classic"),
            "minionize": on_queue("minion", "classic"), "dramatiq": dramatiq,
            "minionize prefetch": on_queue("minion", "classic", AMQP_PREFETCH="2"),
            "bare quorum": on_queue("amqp-bare", "quorum"), "minionize quorum": on_queue("minion", "quorum"),
            "minionize 8 slots": on_queue("minion", "classic", MINION_CONCURRENCY=str(SLOTS))}


# -- NATS JetStream ---------------------------------------------------------------------


def _fill_stream(stream: str, count: int) -> None:
    """Publish the messages and create the stream and its durable consumer, as minion-push does."""
    from minionize.engines.nats import NatsEngine

    engine = NatsEngine(stream, NATS_URL)
    try:
        engine.push([str(i) for i in range(count)])
    finally:
        engine.close()


def _delete_streams(*streams: str) -> None:
    import asyncio
    from contextlib import suppress

    import nats
    import nats.js.errors

    async def delete() -> None:
        client = await nats.connect(NATS_URL)
        for stream in streams:
            with suppress(nats.js.errors.NotFoundError):
                await client.jetstream().delete_stream(stream)
        await client.close()

    asyncio.run(delete())


def nats_contenders(work: Path, count: int) -> dict[str, Measure]:
    def on_stream(kind: str) -> Measure:
        def measure(name: str) -> float:
            _fill_stream(name, count)
            try:
                extra = {"MINION_ENGINE": "nats", "NATS_URL": NATS_URL, "NATS_STREAM": name}
                return _rate(launch([([kind, name, str(count)], env(**extra))], work), count)
            finally:
                _delete_streams(name, f"{name}_dead")

        return measure

    return {"bare": on_stream("nats-bare"), "thread": on_stream("nats-thread"), "minionize": on_stream("minion")}


def nats_rows(rates: dict[str, float]) -> list[Row]:
    bare, thread = rates["bare"], rates["thread"]
    rows = _against_bare("nats: minionize, FuncCallback no-op", rates["minionize"], bare,
                         "nats: bare nats-py pull loop, fetch(1) + ack")
    rows.insert(1, ("nats: the same loop, each call from the main thread through an event loop thread",
                    _fmt(thread), f"{thread / bare:.2f}x the bare loop", ""))
    return rows


# -- PostgreSQL ----------------------------------------------------------------------------


def _fill_table(table: str, count: int) -> None:
    """Create the table and COPY the rows in, as minion-push does."""
    from minionize.engines.postgres import PostgresEngine

    engine = PostgresEngine(table, POSTGRES_URL)
    try:
        engine.push([str(i) for i in range(count)])
    finally:
        engine.close()


def _drop_table(table: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def _pgqueuer_schema(install: bool) -> None:
    """Install PGQueuer's tables in the database (uninstall: drop them), as its `pgq install` does."""
    import asyncio

    import psycopg
    from pgqueuer import PsycopgDriver, Queries

    async def change() -> None:
        conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
        queries = Queries(PsycopgDriver(conn))
        if await queries.schema_is_installed():
            await queries.uninstall()
        if install:
            await queries.install()
        await conn.close()

    asyncio.run(change())


def postgres_contenders(work: Path, count: int) -> dict[str, Measure]:
    def on_table(kind: str) -> Measure:
        def measure(name: str) -> float:
            table = name.replace("-", "_")
            _fill_table(table, count)
            try:
                extra = {"MINION_ENGINE": "postgres", "POSTGRES_URL": POSTGRES_URL, "POSTGRES_TABLE": table}
                return _rate(launch([([kind, table, str(count)], env(**extra))], work), count)
            finally:
                _drop_table(table)

        return measure

    def pgqueuer(name: str) -> float:
        _pgqueuer_schema(install=True)
        try:
            return _rate(launch([(["pgqueuer", name, str(count)], env())], work), count)
        finally:
            _pgqueuer_schema(install=False)

    return {"bare": on_table("pg-bare"), "minionize": on_table("minion"), "pgqueuer": pgqueuer}


def postgres_rows(rates: dict[str, float]) -> list[Row]:
    import pgqueuer

    mine, other = rates["minionize"], rates["pgqueuer"]
    rows = _against_bare("postgres: minionize, FuncCallback no-op", mine, rates["bare"],
                         "postgres: bare psycopg loop, SELECT ... FOR UPDATE SKIP LOCKED + UPDATE + COMMIT")
    rows.append((f"postgres: PGQueuer {pgqueuer.__version__}, 1 QueueManager, batch_size=1", _fmt(other),
                 f"minionize {mine / other:.2f}x PGQueuer", f"minionize ahead: {verdict(mine > other)}"))
    return rows


# -- the table --------------------------------------------------------------------------

Row = tuple[str, str, str, str]


def _fmt(rate: float) -> str:
    return f"{rate:,.0f} msgs/s"


def _against_bare(what: str, mine: float, bare: float, bare_what: str) -> list[Row]:
    return [
        (f"{bare_what}, one at a time", _fmt(bare), "reference", ""),
        (what, _fmt(mine), f"{mine / bare:.2f}x the bare loop", f">= 0.5x bare: {verdict(mine >= 0.5 * bare)}"),
    ]


def _rows(prefix: str, loop: str, batch: str, rates: dict[str, float]) -> list[Row]:
    import dramatiq

    bare, mine, other = rates["bare"], rates["minionize"], rates["dramatiq"]
    rows = _against_bare(f"{prefix}: minionize, FuncCallback no-op", mine, bare, f"{prefix}: bare loop, {loop}")
    rows.insert(1, (f"{prefix}: bare loop, {batch} (upper bound: holds messages it is not running)",
                    _fmt(rates["batch"]), f"{rates['batch'] / bare:.1f}x the bare loop", ""))
    rows.append((f"{prefix}: Dramatiq {dramatiq.__version__}, 1 worker process, 1 thread", _fmt(other),
                 f"minionize {mine / other:.2f}x Dramatiq", f"minionize ahead: {verdict(mine > other)}"))
    slots = rates["minionize 8 slots"]
    rows.append((f"{prefix}: minionize, MINION_CONCURRENCY={SLOTS} (a message per free slot)", _fmt(slots),
                 f"{slots / bare:.2f}x the bare loop", f">= 1x bare: {verdict(slots >= bare)}"))
    return rows


def run(count: int = MESSAGES, repeat: int = 1) -> str:
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))  # the consumers' working directory
    brokers = {"redis": redis_contenders(work, count), "amqp": amqp_contenders(work, count),
               "nats": nats_contenders(work, count),
               "postgres": postgres_contenders(work, count)}
    best: dict[str, dict[str, float]] = {broker: {} for broker in brokers}
    try:
        for round_ in range(repeat):  # in turns, so that a busy moment hits every contender alike
            for broker, contenders in brokers.items():
                for name, measure in contenders.items():
                    rate = measure(f"bench-tp-{os.getpid()}-{round_}-{name.replace(' ', '-')}")
                    best[broker][name] = max(best[broker].get(name, 0.0), rate)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    amqp = best["amqp"]
    rows = _rows("redis", "XREADGROUP COUNT 1 + XACK", "XREADGROUP COUNT 100 + one XACK", best["redis"])
    rows += _rows("amqp, classic queue", "basic_get + basic_ack", "basic_consume, prefetch 100", amqp)
    prefetching, other = amqp["minionize prefetch"], amqp["dramatiq"]
    rows.append(("amqp, classic queue: minionize, AMQP_PREFETCH=2 (Dramatiq's prefetch)", _fmt(prefetching),
                 f"minionize {prefetching / other:.2f}x Dramatiq", f"minionize ahead: {verdict(prefetching > other)}"))
    rows += _against_bare("amqp, quorum queue (the default): minionize, FuncCallback no-op", amqp["minionize quorum"],
                          amqp["bare quorum"], "amqp, quorum queue: bare loop, basic_get + basic_ack")
    rows += nats_rows(best["nats"])
    rows += postgres_rows(best["postgres"])
    how = f"best of {repeat}" if repeat > 1 else "one run each, back to back"
    return table(f"Broker throughput: {count:,} messages into a no-op function, one in flight ({how})", rows)


if __name__ == "__main__":
    print(run())
