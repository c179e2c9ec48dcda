"""`minion-push` into RabbitMQ: a window of publisher confirms, not a round trip per message.

pika's BlockingChannel in confirm mode waits for each message's confirm,
about a millisecond: a quarter of an hour for a million parameters. Here
the messages go out on a channel of their own, in confirm mode, whose
confirms are counted as they come (RabbitMQ acks many at once with
`multiple`), with up to WINDOW of them unconfirmed; the frames of a batch
of messages are written in one send. A parameter counts as queued only once
confirmed: a nack, a message returned as unroutable, a closed channel or
connection, or no confirm within the operation timeout stop the push with
how many parameters are confirmed, and which.

Each message carries the push's own id and its number (`<hex>-<n>`), so
that a returned message names its parameter.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from typing import Any, Optional

import pika
import pika.exceptions
from pika import frame, spec

#: Messages published and not yet confirmed, at most: enough that RabbitMQ
#: always has work while its confirms travel back (a quorum queue confirms
#: after a write to its log); bounded, as what a failure leaves unknown.
WINDOW = 10_000
#: Messages written in one send, at most; and bytes (a batch of large parameters is sent sooner).
BATCH = 500
BATCH_BYTES = 1 << 20
#: A body larger than this goes through pika's own publish, which splits it into
#: frames: AMQP's smallest frame (4096 bytes) less its header and end.
_ONE_FRAME = 4096 - 8
#: How long one wait for confirms lasts before the window is looked at again.
_POLL = 0.01
_FRAME = struct.Struct(">BHI")  # a frame's type, channel and size
_CONTENT = struct.Struct(">HxxQ")  # a content header's class (basic), weight and body size
_END = bytes((spec.FRAME_END,))


class Frames:
    """The frames of one published message, as pika marshals them, at a fraction of the cost.

    pika builds a message's frames in about 14 us, most of it encoding its
    properties; here they are encoded once per content type, and only the
    message id, the last of them on the wire, is added to them (2.5 us).
    tests/unit/test_amqp_frames.py holds the bytes to pika's.
    """

    def __init__(self, channel: int, queue: str) -> None:
        self.channel = channel
        publish = spec.Basic.Publish(exchange="", routing_key=queue, mandatory=True)
        self.method = frame.Method(channel, publish).marshal()
        self._encoded: dict[str, bytes] = {}

    def __call__(self, body: bytes, content_type: str, message_id: str) -> bytes:
        encoded = self._encoded.get(content_type)
        if encoded is None:
            # pika's encoding of the same properties with the id "-" (a short string: its length, then "-").
            sample = spec.BasicProperties(delivery_mode=2, content_type=content_type, message_id="-")
            encoded = self._encoded[content_type] = b"".join(sample.encode())[:-2]
        identity = message_id.encode()
        header = b"".join((_CONTENT.pack(spec.BasicProperties.INDEX, len(body)), encoded, bytes((len(identity),)),
                           identity))
        frames = [self.method, _FRAME.pack(spec.FRAME_HEADER, self.channel, len(header)), header, _END]
        if body:  # as pika: no body frame for an empty body
            frames += (_FRAME.pack(spec.FRAME_BODY, self.channel, len(body)), body, _END)
        return b"".join(frames)


class PushFailed(Exception):
    """RabbitMQ did not take a parameter: refused it, returned it, closed the channel or stopped answering."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class ConfirmWindow:
    """Publishes persistent messages to `queue` on a channel of `connection`, confirms pipelined.

    `bounded()` aborts the connection when what runs inside it waits on RabbitMQ
    past the operation timeout (pika writes its buffer out before it reads).
    """

    def __init__(self, connection: pika.BlockingConnection, queue: str, timeout: float,
                 bounded: Callable[[], AbstractContextManager[None]], window: int = WINDOW) -> None:
        self.queue, self.timeout, self.window = queue, timeout, window
        self._connection, self._bounded = connection, bounded
        self.published = 0
        #: Parameters 1 to `prefix` are confirmed; `ahead`, those confirmed after a gap;
        #: `refused`, those nacked or returned.
        self.prefix = 0
        self.ahead: set[int] = set()
        self.refused: set[int] = set()
        self._failure: Optional[PushFailed] = None
        self._answers = 0  # confirms and returns seen: progress, for the timeout
        self._frames: list[bytes] = []
        self._unsent = self._unsent_bytes = 0  # messages (and their bytes) not handed to the socket yet
        self._id = uuid.uuid4().hex
        with bounded():
            self._channel = connection.channel()
        # The channel under the blocking one: it takes a callback for the confirms,
        # where the blocking channel would wait for each one.
        self._impl = self._channel._impl  # noqa: SLF001
        self._number = self._channel.channel_number
        self._impl.add_on_return_callback(self._on_return)
        self._impl.add_on_close_callback(self._on_close)
        selected: list[Any] = []
        self._impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=selected.append)
        self._wait(lambda: bool(selected))
        self._marshal = Frames(self._number, queue)

    @property
    def confirmed(self) -> int:
        return self.prefix + len(self.ahead)

    def publish(self, body: bytes, content_type: str) -> None:
        """Queue one message; waits while the window is full. Raises PushFailed."""
        self.published += 1
        message_id = f"{self._id}-{self.published}"
        if len(body) > _ONE_FRAME:
            self._send()  # in order: what was batched goes first
            properties = spec.BasicProperties(delivery_mode=2, content_type=content_type, message_id=message_id)
            with self._bounded():
                self._impl.basic_publish("", self.queue, body, properties, mandatory=True)
        else:
            self._frames.append(self._marshal(body, content_type, message_id))
        self._unsent, self._unsent_bytes = self._unsent + 1, self._unsent_bytes + len(body)
        if self._unsent >= BATCH or self._unsent_bytes >= BATCH_BYTES:
            self._send()
            self._wait(lambda: self.published - self.prefix < self.window)

    def finish(self) -> None:
        """Wait for every confirm. Raises PushFailed."""
        self._send()
        self._wait(lambda: self.prefix == self.published)

    def report(self, why: str) -> str:
        """What RabbitMQ took of the parameters, when the push stopped for `why`."""
        confirmed, refused = self.confirmed, len(self.refused)
        which = f"parameters 1 to {self.prefix}" if self.prefix else "none of the first ones"
        if self.ahead:
            which += f" and {len(self.ahead)} after them"
        text = f"{why}; {confirmed} of the {self.published} published are confirmed queued ({which})"
        if refused:
            text += f", {refused} refused"
        unknown = self.published - confirmed - refused
        if unknown:
            text += f", {unknown} not confirmed: they may or may not be queued"
        return f"{text}; nothing after parameter {self.published} was published"

    def _send(self) -> None:
        if not self._unsent:
            return
        if not self._impl.is_open:
            self._fail(self._failure or PushFailed("its channel was closed"))
        if self._frames:
            # One write for the batch (pika's own publish makes a send of each frame).
            self._connection._impl._output_marshaled_frames([b"".join(self._frames)])  # noqa: SLF001
            self._frames.clear()
        self._unsent = self._unsent_bytes = 0
        with self._bounded():
            self._connection.process_data_events(0)
        if self._failure is not None:
            self._fail(self._failure)

    def _wait(self, done: Callable[[], bool], failing: bool = False) -> None:
        """Read confirms until done(); no answer within the timeout raises PushFailed.

        A refusal stops the push (raises PushFailed) once every message published has its answer,
        so that the report says exactly what RabbitMQ took; unless `failing` (that wait itself).
        """
        seen, deadline = self._answers, time.monotonic() + self.timeout
        while not done():
            if self._failure is not None and not failing:
                self._fail(self._failure)
            if self._answers != seen:
                seen, deadline = self._answers, time.monotonic() + self.timeout
            elif time.monotonic() >= deadline:
                raise PushFailed(f"no confirm within {self.timeout:g}s")
            with self._bounded():
                self._connection.process_data_events(_POLL)
        if self._failure is not None and not failing:
            self._fail(self._failure)

    def _fail(self, failure: PushFailed) -> None:
        """Wait for the answers still to come (bounded), then raise `failure`."""
        self._frames.clear()  # never sent
        self._unsent = self._unsent_bytes = 0
        if self._impl.is_open:
            # What went wrong first is what the push says, whatever happens in this wait.
            with suppress(PushFailed, pika.exceptions.AMQPError, OSError):
                self._wait(lambda: self.confirmed + len(self.refused) >= self.published, failing=True)
        raise failure

    def _on_confirm(self, confirm: frame.Method[Any]) -> None:
        method = confirm.method
        tag, self._answers = method.delivery_tag, self._answers + 1
        first = self.prefix + 1 if method.multiple else tag
        if isinstance(method, spec.Basic.Nack):
            numbers = set(range(first, tag + 1)) - self.ahead
            self.refused |= numbers
            self._refuse(f"RabbitMQ refused parameter {min(numbers | {tag})} (a nack: the queue is full, "
                         "or RabbitMQ could not store it)")
        elif method.multiple and not self.refused:
            self.prefix = max(self.prefix, tag)
            self.ahead = {n for n in self.ahead if n > tag}
        else:  # a returned message is acked too: it must not count
            self.ahead.update(n for n in range(first, tag + 1) if n not in self.refused)
        while self.prefix + 1 in self.ahead:
            self.prefix += 1
            self.ahead.remove(self.prefix)

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        # RabbitMQ returns a message before it acks it.
        self._answers += 1
        head, _, number = str(properties.message_id).rpartition("-")
        if head == self._id and number.isdigit():
            self.refused.add(int(number))
        self._refuse(f"RabbitMQ returned parameter {number} as unroutable ({method.reply_text}: "
                     f"the queue {self.queue} is gone)")

    def _on_close(self, channel: Any, reason: Exception) -> None:
        self._refuse(f"RabbitMQ closed the channel ({reason})")

    def _refuse(self, why: str) -> None:
        if self._failure is None:  # the first one is what went wrong
            self._failure = PushFailed(why)
