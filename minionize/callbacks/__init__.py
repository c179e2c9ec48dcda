"""Callbacks: what runs for each parameter (a process, a Python function, a container)."""

from ..errors import MissingExtra
from .base import Callback, RunContext
from .function import FuncCallback
from .process import ProcessCallback

__all__ = ["Callback", "RunContext", "FuncCallback", "ProcessCallback", "DockerCallback"]


def __getattr__(name: str) -> object:
    # DockerCallback imports the docker SDK: only when asked for.
    if name == "DockerCallback":
        try:
            from .docker import DockerCallback
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in ("docker", "requests"):
                raise
            raise MissingExtra("DockerCallback", "docker", "docker", exc.name or "docker") from None
        return DockerCallback
    raise AttributeError(name)
