"""URLs are shown without their credentials."""

from __future__ import annotations

import pytest

from minionize.secrets import mask_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:s3cret@localhost:5672/%2F", "amqp://guest:***@localhost:5672/%2F"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://127.0.0.1/0?password=s3cret&db=1", "redis://127.0.0.1/0?password=***&db=1"),
        ("amqps://u:p@h/?ssl_options=%7B%27keyfile_password%27%3A+%27x%27%7D", "amqps://u:***@h/?ssl_options=***"),
        ("pulsar+ssl://tok3n@broker:6651", "pulsar+ssl://***@broker:6651"),
        ("pulsar://localhost:6650", "pulsar://localhost:6650"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("unix:///run/redis.sock?password=s3cret&db=2", "unix:///run/redis.sock?password=***&db=2"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert "s3cret" not in mask_url(url) and "tok3n" not in mask_url(url)
