"""Lazy registries: a name maps to "module:Class", imported only when chosen.

Choosing the execo engine therefore never imports grpc, google-cloud or the
pulsar client. An unknown name gets a "did you mean"; an optional package
that is missing names the extra that installs it.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import did_you_mean
from .errors import ConfigError, MissingExtra

#: MINION_ENGINE values.
ENGINES = {
    "execo": "minionize.engines.execo:ExecoEngine",
    "file": "minionize.engines.file:FileEngine",
    "memory": "minionize.engines.memory:MemoryEngine",
    "google": "minionize.engines.google:GoogleEngine",
    "pulsar": "minionize.engines.pulsar:PulsarEngine",
    "redis": "minionize.engines.redis:RedisEngine",
    "amqp": "minionize.engines.amqp:AmqpEngine",
}

#: MINION_REPORTER values.
REPORTERS = {
    "null": "minionize.reporters.null:NullReporter",
    "stdout": "minionize.reporters.stdout:StdoutReporter",
    "json": "minionize.reporters.json:JsonReporter",
}

#: Top-level third-party module -> the extra of pyproject.toml that installs it.
EXTRAS = {
    "google": "google",
    "grpc": "google",
    "pulsar": "pulsar",
    "docker": "docker",
    "redis": "redis",
    "pika": "amqp",
    "prometheus_client": "metrics",
}


def load(registry: dict[str, str], variable: str, name: str) -> Any:
    """Import and return the class registered under `name`."""
    target = registry.get(name)
    if target is None:
        raise ConfigError(variable, name, did_you_mean(name, list(registry)))
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in EXTRAS:
            raise MissingExtra(variable, name, EXTRAS[missing], exc.name or missing) from None
        raise
    return getattr(module, attribute)


def engine_class(name: str) -> Any:
    return load(ENGINES, "MINION_ENGINE", name)


def reporter_class(name: str) -> Any:
    return load(REPORTERS, "MINION_REPORTER", name)
