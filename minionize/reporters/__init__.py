"""Reporters: where the record of each run goes (see `minionize.registry.REPORTERS`)."""

from .base import MinionInfo, Reporter, RunRecord

__all__ = ["MinionInfo", "Reporter", "RunRecord"]
