"""Assemble a minion from settings: the Python API and the command line share this."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from typing import Any, Callable, Optional

from . import config, exitcodes, logs, registry
from .callbacks.base import Callback
from .callbacks.function import FuncCallback
from .config import Settings
from .engines.base import Engine
from .engines.kit import secret_names
from .errors import ConfigError, MinionizeError, MissingExtra, QueueUnreachable
from .message import Param
from .reporters.base import FanOut, Reporter
from .spelling import misspellings
from .worker import Worker


def configure_logging(settings: Settings) -> None:
    """Log to stderr (stdout belongs to the wrapped program), unless the host program did."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logs.formatter(settings.log_format))
        root.addHandler(handler)
        if settings.log_format == "json":
            logging.captureWarnings(True)  # a Python warning would be a line of plain text on stderr
    logging.getLogger("minionize").setLevel(settings.log_level)


def build_engine(settings: Settings) -> Engine:
    engine = registry.engine_class(settings.engine).from_env(settings.env)
    if not isinstance(engine, Engine):
        raise ConfigError("MINION_ENGINE", settings.engine, f"from_env() must return the engine, not {engine!r}")
    return engine


def build_reporter(settings: Settings) -> Reporter:
    """MINION_REPORTER, which may name several reporters: `json,stdout`."""
    names = [name.strip() for name in settings.reporter.split(",") if name.strip()] or ["null"]
    reporters: list[Reporter] = [registry.reporter_class(name).from_env(settings.env) for name in names]
    return reporters[0] if len(reporters) == 1 else FanOut(reporters)


def assemble(
    settings: Settings,
    callback: Callback,
    engine: Optional[Engine] = None,
    reporter: Optional[Reporter] = None,
) -> Worker:
    """The worker for `callback`, with what the settings choose for the rest."""
    engine = engine or build_engine(settings)
    reporter = reporter or build_reporter(settings)
    # An out-of-tree engine's secrets are kept from the program too.
    settings = dataclasses.replace(settings, engine_secrets=secret_names(getattr(engine, "settings", ())))
    if settings.metrics_port is None:
        return Worker(engine, callback, settings, reporter)
    try:
        from .reporters.metrics import MetricsReporter, MetricsServer
    except ModuleNotFoundError as exc:
        port = str(settings.metrics_port)
        raise MissingExtra("MINION_METRICS_PORT", port, "metrics", exc.name or "prometheus_client") from None
    metrics = MetricsReporter()
    worker = Worker(engine, callback, settings, FanOut([reporter, metrics]))
    try:
        server = MetricsServer(metrics, worker.probe, settings.metrics_port, settings.metrics_address)
    except OSError as exc:
        port = str(settings.metrics_port)
        raise ConfigError("MINION_METRICS_PORT", port, f"cannot listen there ({exc.strerror})") from None
    worker.attach(server)
    return worker


def say_error(error: MinionizeError) -> None:
    """The last line of a minion that cannot start or go on: a JSON one once the log is JSON."""
    if logs.writes_json():
        logging.getLogger("minionize").error("%s", error)
    else:
        print(f"minionize: {error}", file=sys.stderr)


def exit_code_of(error: MinionizeError) -> int:
    if isinstance(error, ConfigError):
        return exitcodes.CONFIG
    if isinstance(error, QueueUnreachable):
        return exitcodes.UNREACHABLE
    return exitcodes.INTERNAL


class Minion:
    """A callback bound to the engine and reporter that the settings choose."""

    def __init__(
        self,
        callback: Callback,
        engine: Optional[Engine] = None,
        reporter: Optional[Reporter] = None,
        settings: Optional[Settings] = None,
    ) -> None:
        self.callback = callback
        self.engine = engine
        self.reporter = reporter
        self.settings = settings

    def worker(self) -> Worker:
        """Read the configuration (environment, `.env`, `.minionize.yml`) and build the worker."""
        settings = self.settings or config.load()
        configure_logging(settings)
        if self.settings is None:  # read from the environment: a misspelled name is worth a word
            for warning in misspellings(os.environ):
                logging.getLogger("minionize").warning("%s", warning)
        return assemble(settings, self.callback, self.engine, self.reporter)

    def run(self) -> int:
        """Run until the queue is drained or a stop; exit on a configuration error.

        Returns the exit code (0 when drained or stopped cleanly). A bad
        configuration or an unreachable queue prints one line on stderr and
        raises SystemExit with code 2 or 3, as the command line does.
        """
        try:
            return self.worker().run()
        except MinionizeError as error:
            say_error(error)
            raise SystemExit(exit_code_of(error)) from None


def minionizer(
    callback: Callback, engine: Optional[Engine] = None, reporter: Optional[Reporter] = None
) -> Minion:
    """The original API: `minionizer(ProcessCallback()).run()`."""
    return Minion(callback, engine, reporter)


class MinionFunction:
    """A function turned into a minion by `@minion`: still callable, plus `run()`."""

    def __init__(self, func: Callable[[Param], Any]) -> None:
        functools.update_wrapper(self, func)
        self.func = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def minion(self, engine: Optional[Engine] = None, reporter: Optional[Reporter] = None) -> Minion:
        return Minion(FuncCallback(self.func), engine, reporter)

    def run(self, engine: Optional[Engine] = None, reporter: Optional[Reporter] = None) -> int:
        """Take parameters from the configured engine and call the function on each."""
        return self.minion(engine, reporter).run()


def minion(func: Callable[[Param], Any]) -> MinionFunction:
    """Decorator: `@minion def work(param): ...` then `work.run()`."""
    return MinionFunction(func)
