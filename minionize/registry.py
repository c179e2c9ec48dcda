"""Lazy registries: a name maps to "module:Class", imported only when chosen.

Choosing the execo engine therefore never imports grpc, google-cloud or the
pulsar client. An unknown name gets a "did you mean"; an optional package
that is missing names the extra that installs it.

Engines from outside this project need no fork: `MINION_ENGINE` may name a
class (`mylab.queues:LabEngine`), or a name that an installed package
declares in the `minionize.engines` entry-point group
(`[project.entry-points."minionize.engines"] lab = "mylab.queues:LabEngine"`).
"""

from __future__ import annotations

import importlib
from typing import Any, Optional

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
    "postgres": "minionize.engines.postgres:PostgresEngine",
    "nats": "minionize.engines.nats:NatsEngine",
}

#: The prefixes of minionize's own variables: the runtime's, each engine's
#: (its name in capitals: `NATS_URL`), and the reporters'. A new engine's
#: variables are known everywhere (credentials kept from runs, misspellings,
#: the tests' clean environment) through its line above.
VARIABLE_PREFIXES = ("MINION_", *(f"{name.upper()}_" for name in ENGINES), "REPORTER_")

#: MINION_REPORTER values.
REPORTERS = {
    "null": "minionize.reporters.null:NullReporter",
    "stdout": "minionize.reporters.stdout:StdoutReporter",
    "json": "minionize.reporters.json:JsonReporter",
}

#: Top-level third-party module -> the extra of pyproject.toml that installs
#: it, for what is not an engine. An engine's extra bears the engine's name
#: (`pip install 'minionize[nats]'`), whatever its client is called.
EXTRAS = {
    "docker": "docker",
    "prometheus_client": "metrics",
}


#: The entry-point group through which installed packages add engines.
ENGINE_ENTRY_POINTS = "minionize.engines"


def load(registry: dict[str, str], variable: str, name: str) -> Any:
    """Import and return the class registered under `name`."""
    target = registry.get(name)
    if target is None:
        raise ConfigError(variable, name, did_you_mean(name, list(registry)))
    return _import(variable, name, target, extra=name if registry is ENGINES else None)


def _import(variable: str, name: str, target: str, extra: Optional[str] = None, ours: bool = True) -> Any:
    """Import "module:Class"; what fails in a module of the user's (not `ours`) is a configuration error.

    `extra`: the extra that installs what the module needs, when it is not in EXTRAS.
    """
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        needs = EXTRAS.get(missing) or (extra if ours and not missing.startswith("minionize") else None)
        if ours and needs:
            raise MissingExtra(variable, name, needs, exc.name or missing) from None
        if ours:
            raise
        raise ConfigError(variable, name, f"cannot import {module_name} ({exc})") from None
    except Exception as exc:
        if ours:
            raise
        raise ConfigError(variable, name, f"importing {module_name} failed ({type(exc).__name__}: {exc})") from None
    found = getattr(module, attribute, None) if attribute else None
    if found is None:
        raise ConfigError(variable, name, f"{module_name} has no class {attribute or '(none named)'}")
    return found


def engine_class(name: str) -> Any:
    """The engine class of a MINION_ENGINE value: a name of ours, `module:Class`, or an entry point's name."""
    from .engines.base import Engine

    if name in ENGINES:
        return load(ENGINES, "MINION_ENGINE", name)
    if ":" in name:
        found = _import("MINION_ENGINE", name, name, ours=False)
    else:
        plugins = installed_engines()
        if name not in plugins:
            raise ConfigError("MINION_ENGINE", name, did_you_mean(name, [*ENGINES, *plugins]))
        found = _import("MINION_ENGINE", name, plugins[name], ours=False)
    if not (isinstance(found, type) and issubclass(found, Engine)):
        raise ConfigError("MINION_ENGINE", name, "expected a subclass of minionize.engines.base.Engine")
    missing = sorted(getattr(found, "__abstractmethods__", ()))
    if missing:
        raise ConfigError("MINION_ENGINE", name, f"an engine that defines {', '.join(missing)} "
                          "(abstract in minionize.engines.base.Engine)")
    return found


def installed_engines() -> dict[str, str]:
    """name -> "module:Class" of the engines that installed packages declare (entry points)."""
    from importlib.metadata import entry_points

    return {point.name: point.value for point in entry_points(group=ENGINE_ENTRY_POINTS)}


def reporter_class(name: str) -> Any:
    return load(REPORTERS, "MINION_REPORTER", name)
