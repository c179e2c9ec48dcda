"""minionize: turn a program or a function into a queue-fed minion.

    from minionize import minionizer, ProcessCallback

    class MyProcessCallback(ProcessCallback):
        def to_cmd(self, param):
            return ["a.out", "--arg1", str(param["arg1"]), str(param["arg2"])]

    minionizer(MyProcessCallback()).run()

Nothing here imports a broker client: engines are loaded when chosen.
"""

from __future__ import annotations

from .callbacks.base import Callback, RunContext
from .callbacks.function import FuncCallback
from .callbacks.process import ProcessCallback
from .message import Message, Outcome, Param, Status
from .minion import Minion, minion, minionizer

# As in pyproject.toml (a static copy: the image's dependency stage builds
# pyproject.toml over an empty package). Above the original minionize's last
# release on PyPI, 0.3.4: this is its next major step.
__version__ = "1.0.0"

#: The roadmap's `@minionize` decorator, under the name the README uses.
minionize = minion

__all__ = [
    "Callback",
    "DockerCallback",
    "FuncCallback",
    "Message",
    "Minion",
    "Outcome",
    "Param",
    "ProcessCallback",
    "RunContext",
    "Status",
    "minion",
    "minionize",
    "minionizer",
]


def __getattr__(name: str) -> object:
    # The docker SDK is imported only by those who ask for DockerCallback.
    if name == "DockerCallback":
        from .callbacks import DockerCallback

        return DockerCallback
    raise AttributeError(f"module 'minionize' has no attribute {name!r}")
