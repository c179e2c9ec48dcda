"""Bounded, printable text of anything a message may carry, for logs, reports and reasons.

A parameter comes from a queue that anybody may fill: it can be nested
100,000 deep, hold a megabyte, an integer too long for `str()`, or text
that no encoding accepts. `excerpt` never raises, never recurses and costs
time in proportion to `limit`, not to the parameter: it walks the value with
an explicit stack and stops once `limit` characters are written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

#: Beyond this many bits an integer is described rather than written (str() refuses 4,300 digits).
_INT_BITS_MAX = 4096


class _Raw(str):
    """Punctuation written as is (a str value would be quoted)."""


def excerpt(value: Any, limit: int = 200) -> str:
    """JSON-like text of `value` (as json.dumps writes it), cut at `limit` characters with "..."."""
    text, complete = render(value, limit)
    return text if complete else text[: max(0, limit - 3)] + "..."


def render(value: Any, budget: int) -> tuple[str, bool]:
    """The text of `value` up to about `budget` characters, and whether it is all there."""
    parts: list[str] = []
    size = 0
    stack: list[Iterator[Any]] = [iter((value,))]
    while stack:
        if size > budget:
            return "".join(parts), False
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, _Raw):
            parts.append(item)
            size += len(item)
        elif isinstance(item, (list, tuple)):
            stack.append(_sequence(item))
        elif isinstance(item, Mapping):
            stack.append(_mapping(item))
        else:
            text = _scalar(item, budget - size + 1)
            parts.append(text)
            size += len(text)
    return "".join(parts), size <= budget


_END = object()


def _sequence(items: Any) -> Iterator[Any]:
    yield _Raw("[")
    for index, item in enumerate(items):
        if index:
            yield _Raw(", ")
        yield item
    yield _Raw("]")


def _mapping(mapping: Mapping[Any, Any]) -> Iterator[Any]:
    yield _Raw("{")
    for index, (key, item) in enumerate(mapping.items()):
        yield _Raw((", " if index else "") + _key(key) + ": ")
        yield item
    yield _Raw("}")


def _key(key: Any) -> str:
    if isinstance(key, str):
        return _string(key, 200)
    return _string(_scalar(key, 200).strip('"'), 200)


def _scalar(value: Any, room: int) -> str:
    """One value that holds no other, as json.dumps(value, default=str) writes it, cut to about `room`."""
    if isinstance(value, str):
        return _string(value, room)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        bits = abs(value).bit_length()
        if bits > _INT_BITS_MAX:
            return f"<integer of about {int(bits * 0.30103) + 1} digits>"
        return int.__repr__(value)
    if isinstance(value, float):
        return json.dumps(value)
    if isinstance(value, (bytes, bytearray)):
        return _string(repr(bytes(value[:room])), room)
    try:
        text = str(value)
    except Exception:  # a user's object whose __str__ fails
        text = f"<unprintable {type(value).__name__}>"
    return _string(text, room)


def _string(text: str, room: int) -> str:
    """A quoted JSON string of the first `room` characters (escapes make no character unencodable)."""
    return json.dumps(text[: max(0, room)])


def safe_text(text: str, limit: int = 2000) -> str:
    """`text` cut at `limit`, with what UTF-8 cannot encode (lone surrogates) escaped.

    For reasons and errors that go to brokers (Redis, RabbitMQ, Pulsar and
    Pub/Sub all refuse text that is not UTF-8) and to log lines.
    """
    if len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
