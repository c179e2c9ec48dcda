"""What the execo engine's tests share: a sweep made as plain execo makes it, and what its files hold."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

from execo_engine.sweep import ParamSweeper

from minionize.engines import sweepleases


def make_sweep(path: Path, params: object) -> Path:
    ParamSweeper(str(path), sweeps=params, save_sweeps=True)
    return path


def on_disk_in_progress(path: Path) -> set[object]:
    data = (path / "inprogress").read_bytes()
    return set(pickle.loads(data)) if data else set()


def leased(path: Path) -> set[str]:
    """The keys of the parameters that a lease file names (each minion has one)."""
    return set(sweepleases.expiries(str(path / ".minionize" / "leases")))


class Later:
    """A clock `shift` seconds ahead of the wall clock."""

    def __init__(self, shift: float) -> None:
        self.shift = shift

    def __call__(self) -> float:
        return time.time() + self.shift
