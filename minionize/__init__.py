"""minionize: turn a program or a function into a queue-fed minion.

    from minionize import minionizer, ProcessCallback

    class MyProcessCallback(ProcessCallback):
        def to_cmd(self, param):
            return ["a.out", "--arg1", str(param["arg1"]), str(param["arg2"])]

    minionizer(MyProcessCallback()).run()

Nothing here imports a broker client: engines are loaded when chosen.
"""

# Nothing is imported here, not even typing: the commands' entry points (minionize/boot.py)
# handle a Ctrl-C once this and earlystop.py are read, and no sooner.
TYPE_CHECKING = False  # typing.TYPE_CHECKING, as type checkers take any name of that spelling

# As in pyproject.toml (a static copy: the image's dependency stage builds
# pyproject.toml over an empty package). Above the original minionize's last
# release on PyPI, 0.3.4: this is its next major step.
__version__ = "1.0.0"

if TYPE_CHECKING:  # the names as the type checkers see them ("X as X": re-exported)
    from .assembly import Minion as Minion
    from .assembly import minion as minion
    from .assembly import minion as minionize
    from .assembly import minionizer as minionizer
    from .callbacks.base import Callback as Callback
    from .callbacks.base import RunContext as RunContext
    from .callbacks.docker import DockerCallback as DockerCallback
    from .callbacks.function import FuncCallback as FuncCallback
    from .callbacks.process import ProcessCallback as ProcessCallback
    from .message import Message as Message
    from .message import Outcome as Outcome
    from .message import Param as Param
    from .message import Status as Status
del TYPE_CHECKING

#: Where each name of the API lives, imported at its first use: `import minionize` is cheap, so
#: that the commands handle a Ctrl-C from their first line (minionize/boot.py), and the docker
#: SDK is imported only by those who ask for DockerCallback. `minionize` is the roadmap's
#: `@minionize` decorator, under the name the README uses.
_API = {
    "Callback": ("callbacks.base", "Callback"),
    "RunContext": ("callbacks.base", "RunContext"),
    "DockerCallback": ("callbacks", "DockerCallback"),  # MissingExtra without the docker SDK
    "FuncCallback": ("callbacks.function", "FuncCallback"),
    "ProcessCallback": ("callbacks.process", "ProcessCallback"),
    "Message": ("message", "Message"),
    "Outcome": ("message", "Outcome"),
    "Param": ("message", "Param"),
    "Status": ("message", "Status"),
    "Minion": ("assembly", "Minion"),
    "minion": ("assembly", "minion"),
    "minionize": ("assembly", "minion"),
    "minionizer": ("assembly", "minionizer"),
}

#: `from minionize import *`: everything but DockerCallback, which needs the docker extra.
__all__ = [
    "Callback",
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
    import importlib

    if name not in _API:
        # A submodule (`import minionize` then `minionize.engines.base.Engine`), as when this
        # package imported its API eagerly; never a private or special name (`__main__` runs
        # the command line, `__path__` and others are asked for by tools).
        if name.startswith("_"):
            raise AttributeError(f"module 'minionize' has no attribute {name!r}")
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
        raise AttributeError(f"module 'minionize' has no attribute {name!r}") from None
    module, attribute = _API[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # DockerCallback only with the docker SDK: help(minionize) gets every name it lists.
    import importlib.util

    names = {*globals(), *_API}
    if importlib.util.find_spec("docker") is None:
        names.discard("DockerCallback")
    return sorted(names)
