"""The JetStream objects of the nats engine: made when missing, checked when found, and read back.

The stream of parameters (work-queue retention, file storage), the durable
pull consumer the minions share, and the stream that keeps the dead-letter
subject; and the stored messages of a subject, oldest first (the dead
letters). What does not suit minionize is a ConfigError naming the
variable; `said` is the engine's way of quoting the server (URLs masked).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, Optional

import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from ..errors import ConfigError

log = logging.getLogger("minionize")

#: A stream or consumer name: no whitespace, dots, wildcards or path separators.
NAME = re.compile(r"[^\s.*>/\\]{1,255}")
Said = Callable[[BaseException], str]


def check_name(variable: str, name: str) -> None:
    if not NAME.fullmatch(name):
        raise ConfigError(variable, name, "expected a name without spaces, dots, *, > or slashes")


def check_subject(variable: str, subject: str) -> None:
    tokens = subject.split(".")
    if any(not token or any(c.isspace() for c in token) or token in ("*", ">") for token in tokens):
        raise ConfigError(variable, subject, "expected a subject without wildcards, e.g. jobs or jobs.params")


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether the stream subject `pattern` (with * and > wildcards) captures `subject`."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or token not in ("*", tokens[index]):
            return False
    return len(wanted) == len(tokens)


async def ensure_stream(js: Any, stream: str, subject: str, said: Said) -> None:
    """The stream of parameters: created (work queue, file storage), or found capturing `subject`."""
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        config = StreamConfig(name=stream, subjects=[subject], retention=RetentionPolicy.WORK_QUEUE,
                              storage=StorageType.FILE)
        try:
            info = await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            raise ConfigError("NATS_SUBJECT", subject, f"JetStream refused the stream ({said(exc)})") from None
        log.info("created stream %s (subject %s)", stream, subject)
    subjects = info.config.subjects or []
    if not any(subject_matches(pattern, subject) for pattern in subjects):
        raise ConfigError("NATS_SUBJECT", subject,
                          f"the stream {stream} does not capture it (its subjects: {', '.join(subjects)})")


async def ensure_consumer(
    js: Any, stream: str, consumer: str, subject: str, ack_wait: float, max_attempts: int, said: Said,
) -> Optional[float]:
    """The durable pull consumer, created or checked; its own ack wait (None: not set).

    One created here delivers a message MINION_MAX_ATTEMPTS + 1 times at most
    (the last delivery sets aside a parameter whose minions died); one made
    elsewhere with a lower limit is warned of.
    """
    try:
        info = await js.consumer_info(stream, consumer)
    except nats.js.errors.NotFoundError:
        config = ConsumerConfig(durable_name=consumer, filter_subject=subject, ack_policy=AckPolicy.EXPLICIT,
                                ack_wait=ack_wait, max_deliver=max_attempts + 1)
        try:
            info = await js.add_consumer(stream, config)
        except nats.js.errors.BadRequestError as exc:
            raise ConfigError("NATS_CONSUMER", consumer, f"JetStream refused the consumer ({said(exc)})") from None
        log.info("created consumer %s of stream %s", consumer, stream)
    config = info.config
    if config.deliver_subject:
        raise ConfigError("NATS_CONSUMER", consumer, "is a push consumer: minionize needs a pull consumer")
    if config.ack_policy != AckPolicy.EXPLICIT:
        raise ConfigError("NATS_CONSUMER", consumer, "does not ack explicitly: minionize needs AckExplicit")
    limit = config.max_deliver or -1
    if 0 < limit < max_attempts + 1:
        log.warning(
            "consumer %s of %s delivers a message %d times at most: a parameter whose minions die at "
            "MINION_MAX_ATTEMPTS=%d is then never set aside; raise it (nats consumer edit %s %s "
            "--max-deliver=%d), or create it with the same MINION_MAX_ATTEMPTS",
            consumer, stream, limit, max_attempts, stream, consumer, max_attempts + 1,
        )
    return float(config.ack_wait) if config.ack_wait else None


async def ensure_dead_letter_stream(js: Any, subject: str, stream: str, said: Said) -> str:
    """The stream that keeps the dead-letter `subject`: one that captures it already, else `stream`, created."""
    try:
        return str(await js.find_stream_name_by_subject(subject))
    except nats.js.errors.NotFoundError:
        pass
    try:
        await js.add_stream(StreamConfig(name=stream, subjects=[subject], storage=StorageType.FILE))
    except nats.js.errors.BadRequestError as exc:
        raise ConfigError("NATS_DEAD_LETTER_SUBJECT", subject,
                          f"JetStream refused the stream {stream} ({said(exc)})") from None
    return stream


async def stored(js: Any, stream: str, subject: str) -> list[Any]:
    """Every message of `subject` kept by `stream`, oldest first."""
    found: list[Any] = []
    sequence = 1
    while True:
        try:
            message = await js.get_msg(stream, seq=sequence, next=True, subject=subject)
        except nats.js.errors.NotFoundError:
            return found
        found.append(message)
        sequence = message.seq + 1
