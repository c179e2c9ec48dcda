"""Run a container for each parameter, on the Docker engine of DOCKER_HOST.

The container runs `command + arguments(param)` as an argv list, with the
same arguments as ProcessCallback (no shell), the MINION_* variables in its
environment, and the host's network (`network_mode="host"`) unless told
otherwise. As in the original minionize, a subclass may override `to_kwargs`
to return the keyword arguments of
`docker.from_env().containers.run(image, **kwargs)` itself.

Environment: DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH (read by
`docker.from_env()` at each run).

The container is started detached and watched: MINION_TIMEOUT kills it, a
stop of the minion stops it (SIGTERM, then SIGKILL after STOP_TIMEOUT
seconds) or kills it (cold stop). It carries the labels `minionize.guard`
(the minion's guard token) and MINION_RUN_ID: if the minion is killed, its
guard (minionize/guard.py) removes its containers. Its output is forwarded to our stdout and
stderr, and its tails kept in the Outcome. It is always removed afterwards,
so `detach`, `remove`, `auto_remove`, `stream`, `stdout` and `stderr` from
`to_kwargs` are ignored. A missing image is pulled once, as `docker run`
does.
"""

from __future__ import annotations

import shlex
import threading
import time
from typing import IO, Any, Optional, Union

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from requests.exceptions import RequestException

from ..config import Settings
from ..guard import DOCKER_LABEL, MARK, Guard
from ..message import Message, Outcome, Param
from .base import Callback, RunContext, param_env
from .output import OutputStream, emit, own
from .params import BadParam, param_args
from .process import Command

#: Seconds between the SIGTERM of a stop and the SIGKILL.
STOP_TIMEOUT = 3
#: Seconds between two looks at the container's state.
POLL_INTERVAL = 0.1
#: Seconds to wait for the last logs of a finished container.
LOG_DRAIN = 5.0
#: containers.run() keywords that make no sense here: we run detached and remove.
_IGNORED = ("detach", "remove", "auto_remove", "stream", "stdout", "stderr")

Environment = Union[dict[str, Any], list[str]]


class _NoImage(Exception):
    """The image is neither local nor pullable."""


class DockerCallback(Callback):
    """Runs the parameter in a container of `image`; override `to_kwargs` for full control."""

    def __init__(
        self,
        image: str,
        command: Optional[Command] = None,
        args_template: Optional[str] = None,
        **run_kwargs: Any,
    ) -> None:
        if isinstance(command, str):
            command = shlex.split(command)
        self.image = image
        self.command = list(command or [])
        self.args_template = args_template
        #: Extra keyword arguments of containers.run (volumes, mem_limit, user...).
        self.run_kwargs = run_kwargs
        # A container outlives a minion that is killed: the guard removes it then.
        self._guard = Guard(docker=True)

    def setup(self, settings: Settings) -> None:
        if self.args_template is None:
            self.args_template = settings.args_template

    def close(self) -> None:
        self._guard.close()

    def to_kwargs(self, param: Param) -> dict[str, Any]:
        """The keyword arguments of `containers.run(image, **kwargs)` for one parameter.

        An empty command leaves the image's own CMD. The MINION_* variables
        are added to `environment` by `run`, whatever this returns.
        """
        args = [*self.command, *param_args(param, self.args_template)]
        return {**self.run_kwargs, "command": args or None}

    def run(self, message: Message, context: RunContext) -> Outcome:
        try:
            kwargs = self._kwargs(message, context.slot)
        except BadParam as exc:
            return Outcome.rejected(str(exc))
        if context.dry:
            _write(own("stdout"), f"DRY: {_describe(self.image, kwargs)}\n".encode())
            return Outcome.success(None)
        try:
            client = docker.from_env()
        except DockerException as exc:
            return Outcome.failure(f"cannot reach the Docker engine: {_one_line(exc)}")
        seq, mark = self._guard.mark()
        kwargs["environment"] = _with_minion_env(kwargs["environment"], {MARK: mark})
        kwargs["labels"] = _with_labels(kwargs.get("labels"), {DOCKER_LABEL: self._guard.token, MARK: mark})
        self._guard.started(seq)
        try:
            return self._run_container(client, kwargs, context)
        except _NoImage as exc:
            return Outcome.failure(str(exc))
        except (DockerException, RequestException) as exc:
            return Outcome.failure(f"Docker engine error: {_one_line(exc)}")
        finally:
            self._guard.ended(seq)
            client.close()

    def _kwargs(self, message: Message, slot: int) -> dict[str, Any]:
        """to_kwargs, plus the MINION_* variables and the host network by default."""
        kwargs = dict(self.to_kwargs(message.param))
        for key in _IGNORED:
            kwargs.pop(key, None)
        kwargs["environment"] = _with_minion_env(kwargs.get("environment"), param_env(message, slot))
        if not kwargs.get("network"):
            # No bridge: the minion's host network, as a process would have.
            kwargs.setdefault("network_mode", "host")
        return kwargs

    def _run_container(self, client: Any, kwargs: dict[str, Any], context: RunContext) -> Outcome:
        container = self._create(client, kwargs)
        try:
            try:
                container.start()
            except APIError as exc:
                # e.g. the command is not in the image: nothing ran.
                return Outcome.failure(f"cannot start the container: {_one_line(exc)}", exit_code=127)
            followers = [_Follower(container, "stdout"), _Follower(container, "stderr")]
            state, stopped = _watch(container, context)
            out, err = (follower.finish() for follower in followers)
            return _outcome(state, stopped, context, out, err)
        finally:
            _remove(container)

    def _create(self, client: Any, kwargs: dict[str, Any]) -> Any:
        """Create the container, pulling its image first if it is missing."""
        try:
            return client.containers.create(self.image, **kwargs)
        except ImageNotFound:
            pass
        try:
            client.images.pull(self.image, platform=kwargs.get("platform"))
        except (DockerException, RequestException) as exc:
            raise _NoImage(
                f"image {self.image!r} is not available locally and could not be pulled: "
                f"{_one_line(exc)}"
            ) from None
        return client.containers.create(self.image, **kwargs)


def _with_minion_env(given: Optional[Environment], minion: dict[str, str]) -> Environment:
    """The container's environment: the one asked for, with the MINION_* variables on top."""
    if isinstance(given, dict):
        return {**given, **minion}
    kept = [item for item in given or [] if item.partition("=")[0] not in minion]
    return [*kept, *(f"{name}={value}" for name, value in minion.items())]


def _with_labels(given: Any, ours: dict[str, str]) -> dict[str, str]:
    """The container's labels: the ones asked for (a dict, or a list of names), with ours on top."""
    labels = dict(given) if isinstance(given, dict) else {str(name): "" for name in given or []}
    return {**labels, **ours}


def _watch(container: Any, context: RunContext) -> tuple[dict[str, Any], Optional[str]]:
    """Wait for the container to exit, killing it on timeout and stopping it on cancel."""
    deadline = time.monotonic() + context.timeout if context.timeout else None
    stopped: Optional[str] = None
    while True:
        state: dict[str, Any] = container.client.api.inspect_container(container.id)["State"]
        if state.get("Status") in ("exited", "dead"):
            return state, stopped
        if stopped is None and deadline is not None and time.monotonic() > deadline:
            stopped = "timeout"
            _signal(container, hard=True)
        elif stopped is None and context.cancel.is_set():
            stopped = "cancel"
            _signal(container, hard=context.hard_cancel)
        if stopped is None:
            context.cancel.wait(POLL_INTERVAL)  # wakes up at once on a stop
        else:
            time.sleep(POLL_INTERVAL)


def _signal(container: Any, hard: bool) -> None:
    """Kill the container, or stop it politely (SIGTERM, then SIGKILL)."""
    try:
        if hard:
            container.kill()
        else:
            container.stop(timeout=STOP_TIMEOUT)
    except APIError:
        pass  # it exited meanwhile


def _outcome(
    state: dict[str, Any], stopped: Optional[str], context: RunContext, out: str, err: str
) -> Outcome:
    code: Optional[int] = state.get("ExitCode")
    tails = {"stdout_tail": out, "stderr_tail": err}
    if stopped == "cancel":
        return Outcome.interrupted(exit_code=code, **tails)
    if stopped == "timeout":
        return Outcome.failure(f"timed out after {context.timeout:g}s", code, timed_out=True, **tails)
    if code == 0:
        outcome = Outcome.success(0)
        outcome.stdout_tail, outcome.stderr_tail = out, err
        return outcome
    if state.get("OOMKilled"):
        return Outcome.failure("killed: out of memory", code, **tails)
    return Outcome.failure(f"exit code {code}", code, **tails)


def _remove(container: Any) -> None:
    try:
        container.remove(force=True, v=True)
    except NotFound:
        pass
    except (DockerException, RequestException) as exc:
        _write(own("stderr"), f"minionize: cannot remove container {container.short_id}: "
               f"{_one_line(exc)}\n".encode())


class _Follower:
    """Forwards one output stream of a container, from a thread, and keeps its tail."""

    def __init__(self, container: Any, which: str) -> None:
        out = own(which)
        self.stream = OutputStream(out)
        self.logs: Any = None
        self.thread = threading.Thread(
            target=self._pump, args=(container, which), name=f"docker-{which}", daemon=True
        )
        self.thread.start()

    def _pump(self, container: Any, which: str) -> None:
        try:
            self.logs = container.logs(
                stdout=which == "stdout", stderr=which == "stderr", stream=True, follow=True
            )
            for chunk in self.logs:
                self.stream.feed(chunk)
        except Exception:  # a log driver that cannot be read, a stream closed by finish()
            pass  # the output is lost, the run still counts

    def finish(self) -> str:
        """Wait for the end of the stream (bounded) and return its tail."""
        self.thread.join(LOG_DRAIN)
        if self.thread.is_alive() and self.logs is not None:
            self.logs.close()
            self.thread.join(1.0)
        self.stream.close()
        return self.stream.text()


def _describe(image: str, kwargs: dict[str, Any]) -> str:
    """A docker-run-like line for MINION_DRY."""
    command = kwargs.get("command")
    shown = shlex.join(command) if isinstance(command, list) else command or ""
    options = sorted(key for key in kwargs if key not in ("command", "environment"))
    extra = f" ({', '.join(options)})" if options else ""
    return f"docker run {image} {shown}".rstrip() + extra


def _write(out: Optional[IO[bytes]], data: bytes) -> None:
    emit(out, data)


def _one_line(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc) or type(exc).__name__
    return " ".join(text.split())
