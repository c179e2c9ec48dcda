"""One consumer process of the broker benchmarks, and `launch()` to start several at once.

    python bench/consumer.py KIND QUEUE COUNT

The child imports and connects what it needs (and, for Dramatiq, fills its
own queue with COUNT messages), prints `ready`, waits for `go` on stdin, then
consumes until it has processed COUNT messages (`minion`: until drained, or
BENCH_LIMIT runs), and prints one JSON line: `{"first", "last", "count",
"cpu"}`, the first and last message processed as `time.monotonic()` (one
clock for every process of the machine) and its CPU seconds since go. The
parent times from its `go` to the latest `last`: interpreter start-up and
imports are never counted.

KIND:
    minion          minionize's Python API (engine and settings from the
                    environment) with a FuncCallback that sleeps BENCH_SLEEP
                    seconds (default 0: a no-op)
    redis-bare      redis-py: XREADGROUP COUNT 1 then XACK, one at a time
    redis-batch     redis-py: XREADGROUP COUNT 100 then one XACK per batch
    amqp-bare       pika: basic_get then basic_ack, one at a time
    amqp-batch      pika: basic_consume, prefetch 100, one multiple ack per 100
    nats-bare       nats-py: fetch(1) then ack, one at a time, in asyncio.run
    nats-thread     the same loop, each call made from the main thread on an
                    event loop thread, as minionize's nats engine makes them
    pg-bare         psycopg: SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1, UPDATE, COMMIT,
                    one at a time, on the table minion-push filled
    pgqueuer        PGQueuer's QueueManager (psycopg async driver), batch_size=1
    dramatiq-redis  Dramatiq's RedisBroker, a Worker with 1 thread
    dramatiq-amqp   Dramatiq's RabbitmqBroker, a Worker with 1 thread
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
NATS_URL = "nats://127.0.0.1:4222"
GROUP = "minionize"
BATCH = 100
HERE = Path(__file__).resolve()


# -- the parent's side -------------------------------------------------------------


@dataclass
class Run:
    """What the children of one `launch` did, on the `time.monotonic()` clock."""

    go: float
    first: float  # the first message processed, by any child
    last: float  # the last message processed, by any child
    count: int
    cpu: float  # CPU seconds the children used from go to their end
    lock_wait: float = 0.0  # seconds the children waited for an execo sweep's lock

    @property
    def seconds(self) -> float:
        """From go to the last message: the wall time of the whole batch."""
        return self.last - self.go


def launch(children: Sequence[tuple[Sequence[str], dict[str, str]]], cwd: Path, timeout: float = 300) -> Run:
    """Start the children, wait until all are ready, say go to all, collect what they did.

    Each child is (its arguments after consumer.py, its environment).
    """
    processes = [
        subprocess.Popen(
            [sys.executable, str(HERE), *argv], cwd=cwd, env=environ, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for argv, environ in children
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if line.strip() != "ready":
                raise SystemExit(f"a consumer did not start: {line}{process.communicate(timeout=30)[1][-2000:]}")
        go = time.monotonic()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = []
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            if process.returncode != 0:
                raise SystemExit(f"a consumer failed ({process.returncode}): {err[-2000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    busy = [r for r in results if r["count"]]
    if not busy:
        raise SystemExit("no consumer processed any message")
    return Run(go, min(r["first"] for r in busy), max(r["last"] for r in busy),
               sum(r["count"] for r in results), sum(r["cpu"] for r in results),
               sum(r.get("lock_wait", 0.0) for r in results))


# -- the children ----------------------------------------------------------------


class Clock:
    """The first and last processed message, and how many."""

    def __init__(self) -> None:
        self.first = self.last = self.cpu = self.lock_wait = 0.0
        self.count = 0

    def start(self) -> None:
        self.cpu = time.process_time()

    def tick(self, n: int = 1) -> None:
        self.last = time.monotonic()
        if not self.count:
            self.first = self.last
        self.count += n

    def report(self) -> None:
        cpu = time.process_time() - self.cpu
        print(json.dumps({"first": self.first, "last": self.last, "count": self.count, "cpu": cpu,
                          "lock_wait": self.lock_wait}), flush=True)


def ready(clock: Clock) -> None:
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")
    clock.start()


def noop(param: Any) -> None:
    """The task of every contender."""


def run_minion(clock: Clock) -> None:
    """minionize's Python API: the settings and the engine come from the environment."""
    from minionize import FuncCallback, Minion
    from minionize.reporters.base import Reporter, RunRecord

    pause = float(os.environ.get("BENCH_SLEEP") or 0)
    limit = int(os.environ.get("BENCH_LIMIT") or 0)

    def task(param: Any) -> None:
        if pause:
            time.sleep(pause)

    class Timing(Reporter):
        def finished(self, run: RunRecord) -> None:  # called once the message is settled
            clock.tick()
            if clock.count == limit:
                worker.request_stop()

    os.environ["MINION_LOG_LEVEL"] = "ERROR"  # the stop at BENCH_LIMIT is no news
    worker = Minion(FuncCallback(task), reporter=Timing()).worker()
    ready(clock)
    code = worker.run()
    clock.lock_wait = getattr(worker.engine, "lock_wait", 0.0)  # the execo engine's
    if code != 0:
        raise SystemExit(code)


def run_redis(clock: Clock, stream: str, count: int, batch: int) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    ready(clock)
    while clock.count < count:
        reply = client.xreadgroup(GROUP, "bare", {stream: ">"}, count=batch, block=1000)
        entries = reply[0][1] if reply else []
        for _, fields in entries:
            noop(fields[b"param"])
        if entries:
            client.xack(stream, GROUP, *(entry_id for entry_id, _ in entries))
            clock.tick(len(entries))


def run_amqp(clock: Clock, queue: str, count: int) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    ready(clock)
    while clock.count < count:
        method, _, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            connection.sleep(0.01)
            continue
        noop(body)
        channel.basic_ack(method.delivery_tag)
        clock.tick()
    connection.close()


def run_amqp_batch(clock: Clock, queue: str, count: int) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=BATCH)
    ready(clock)
    unacked = 0
    for method, _, body in channel.consume(queue, inactivity_timeout=5):
        if method is None:
            raise SystemExit(f"{queue}: nothing for 5 s after {clock.count} messages")
        noop(body)
        unacked += 1
        if unacked == BATCH or clock.count + unacked == count:
            channel.basic_ack(method.delivery_tag, multiple=True)
            clock.tick(unacked)
            unacked = 0
        if clock.count == count:
            break
    channel.cancel()
    connection.close()


def run_nats(clock: Clock, stream: str, count: int, threaded: bool) -> None:
    """fetch(1) and ack on the durable consumer that minion-push created; `threaded`: each call from the
    main thread through an event loop of its own thread (what nats-py costs a synchronous caller)."""
    import asyncio

    import nats

    async def connect() -> Any:
        client = await nats.connect(NATS_URL)
        return client, await client.jetstream().pull_subscribe_bind(GROUP, stream)

    async def one(subscription: Any) -> None:
        [message] = await subscription.fetch(1, timeout=5)
        noop(message.data)
        await message.ack()

    async def alone() -> None:
        client, subscription = await connect()
        ready(clock)
        while clock.count < count:
            await one(subscription)
            clock.tick()
        await client.close()

    if not threaded:
        asyncio.run(alone())
        return
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def call(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(30)

    client, subscription = call(connect())
    ready(clock)
    while clock.count < count:
        call(one(subscription))
        clock.tick()
    call(client.close())
    loop.call_soon_threadsafe(loop.stop)
    thread.join()


def run_pg(clock: Clock, table: str, count: int) -> None:
    """The bare SKIP LOCKED loop on the table minion-push filled: take the first pending row in a
    transaction (its row lock is the lease), process it, mark it done, commit; one at a time."""
    import psycopg
    from psycopg import sql

    take = sql.SQL("SELECT id, param FROM {} WHERE state = 'pending' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED")
    done = sql.SQL("UPDATE {} SET state = 'done', finished_at = now() WHERE id = %s")
    name = sql.Identifier(table)
    with psycopg.connect(POSTGRES_URL) as conn:
        take_q, done_q = take.format(name), done.format(name)
        ready(clock)
        while clock.count < count:
            with conn.transaction():
                row = conn.execute(take_q).fetchone()
                if row is None:
                    continue
                noop(row[1])
                conn.execute(done_q, (row[0],))
            clock.tick()


def run_pgqueuer(clock: Clock, entrypoint: str, count: int) -> None:
    """PGQueuer (psycopg's async driver) on the schema the parent installed: the child enqueues its
    jobs, then one QueueManager dequeues one job at a time (batch_size=1) until all are done."""
    import asyncio
    from datetime import timedelta

    import psycopg
    from pgqueuer import PsycopgDriver, Queries, QueueManager

    async def main() -> None:
        conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
        queries = Queries(PsycopgDriver(conn))
        await queries.enqueue([entrypoint] * count, [str(i).encode() for i in range(count)], [0] * count)
        manager = QueueManager(queries)

        @manager.entrypoint(entrypoint)
        async def task(job: Any) -> None:
            noop(job.payload)
            clock.tick()
            if clock.count == count:
                manager.shutdown.set()

        ready(clock)
        await manager.run(batch_size=1, dequeue_timeout=timedelta(seconds=1))
        await conn.close()

    asyncio.run(main())


def run_dramatiq(clock: Clock, broker_kind: str, queue: str, count: int) -> None:
    """Dramatiq fills its own queue (its message format), then one Worker with one thread drains it."""
    import logging

    import dramatiq

    logging.getLogger("dramatiq").setLevel(logging.WARNING)
    if broker_kind == "redis":
        from dramatiq.brokers.redis import RedisBroker

        broker: Any = RedisBroker(url=REDIS_URL, namespace=queue)
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=AMQP_URL)
    dramatiq.set_broker(broker)
    done = threading.Event()

    @dramatiq.actor(queue_name=queue, max_retries=0)
    def task(param: Any) -> None:
        noop(param)
        clock.tick()
        if clock.count == count:
            done.set()

    for i in range(count):
        task.send(str(i))
    ready(clock)
    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.start()
    if not done.wait(300):
        raise SystemExit(f"dramatiq processed {clock.count} of {count}")
    worker.join()  # the last acks
    worker.stop()
    broker.close()


def main(argv: list[str]) -> int:
    kind, queue, count = argv[0], argv[1], int(argv[2])
    clock = Clock()
    if kind == "minion":
        run_minion(clock)
    elif kind in ("redis-bare", "redis-batch"):
        run_redis(clock, queue, count, 1 if kind == "redis-bare" else BATCH)
    elif kind == "amqp-bare":
        run_amqp(clock, queue, count)
    elif kind == "amqp-batch":
        run_amqp_batch(clock, queue, count)
    elif kind in ("nats-bare", "nats-thread"):
        run_nats(clock, queue, count, threaded=kind == "nats-thread")
    elif kind == "pg-bare":
        run_pg(clock, queue, count)
    elif kind == "pgqueuer":
        run_pgqueuer(clock, queue, count)
    elif kind.startswith("dramatiq-"):
        run_dramatiq(clock, kind.removeprefix("dramatiq-"), queue, count)
    else:
        raise SystemExit(f"unknown kind {kind}")
    clock.report()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
