"""Queue engines: where parameters come from (see `minionize.registry.ENGINES`)."""

from .base import Engine

__all__ = ["Engine"]
