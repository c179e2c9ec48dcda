"""minion-push's frames for RabbitMQ (amqppush.Frames) are byte for byte the ones pika makes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pika import frame, spec

from minionize.engines.amqppush import _ONE_FRAME, Frames

# No example database: nothing written into the checkout.
settings.register_profile("amqp-frames", database=None)
settings.load_profile("amqp-frames")


def pika_frames(channel: int, queue: str, body: bytes, content_type: str, message_id: str) -> bytes:
    """What pika's Channel.basic_publish writes for the same message (Connection._send_message)."""
    properties = spec.BasicProperties(delivery_mode=2, content_type=content_type, message_id=message_id)
    publish = spec.Basic.Publish(exchange="", routing_key=queue, mandatory=True)
    frames = [frame.Method(channel, publish).marshal(), frame.Header(channel, len(body), properties).marshal()]
    if body:
        frames.append(frame.Body(channel, body).marshal())
    return b"".join(frames)


@given(
    channel=st.integers(1, 65535),
    queue=st.text(max_size=60),  # a short string: at most 255 bytes
    messages=st.lists(
        st.tuples(st.binary(max_size=_ONE_FRAME), st.sampled_from(["text/plain", "application/json"]),
                  st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=100)),  # ids are ASCII
        min_size=1, max_size=5,
    ),
)
def test_the_frames_of_a_message_are_pikas(channel: int, queue: str, messages: list[tuple[bytes, str, str]]) -> None:
    marshal = Frames(channel, queue)
    for body, content_type, message_id in messages:  # several: the properties are encoded once per content type
        assert marshal(body, content_type, message_id) == pika_frames(channel, queue, body, content_type, message_id)


def test_an_empty_body_has_no_body_frame_and_a_full_one_fits_in_one() -> None:
    marshal = Frames(1, "q")
    empty = marshal(b"", "text/plain", "id-1")
    assert empty == pika_frames(1, "q", b"", "text/plain", "id-1")
    full = marshal(b"x" * _ONE_FRAME, "text/plain", "id-1")
    # One body frame more, of the smallest size a broker may allow: type, channel, size, body, end.
    assert len(full) - len(empty) == 1 + 2 + 4 + _ONE_FRAME + 1 == spec.FRAME_MIN_SIZE
