"""Run a program for each parameter, as a subprocess in its own process group.

The parameter is appended to the command's argv: a string is split into
words as a shell would (quotes respected) but never interpreted, a list adds
one argument per item, a dict adds one JSON argument, unless MINION_ARGS maps
it with a template such as `--lr {lr} --seed {seed}`. No shell is involved,
unless a subclass's `to_cmd` returns a string: then the user's own code asked
for a shell, as in the original minionize.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Callable, Optional, Union

from ..config import Settings
from ..errors import ConfigError
from ..guard import MARK, Guard
from ..message import Message, Outcome, Param
from ..registry import VARIABLE_PREFIXES
from .base import Callback, RunContext, param_env
from .child import spawn, supervise, which
from .output import PLAIN, OutputStream, RunOutput, emit, own, param_text, result_name, run_output
from .params import ARG_MAX_BYTES, BadParam, param_args

#: Larger MINION_PARAM values go to MINION_PARAM_FILE instead.
ENV_VALUE_MAX = 64 * 1024

Command = Union[Sequence[str], str]


class ProcessCallback(Callback):
    """Runs `command + arguments(param)`; override `to_cmd` for full control."""

    def __init__(
        self,
        command: Optional[Command] = None,
        args_template: Optional[str] = None,
        env: Optional[dict[str, str]] = None,
        cwd: Optional[str] = None,
    ) -> None:
        if isinstance(command, str):
            command = shlex.split(command)
        self.command = list(command or [])
        self.args_template = args_template
        self.env = dict(env or {})
        self.cwd = cwd
        self.timeout: Optional[float] = None
        # Per-run costs that need not be paid per run (see _environment, _executable).
        self._base_env: Optional[dict[bytes, bytes]] = None
        self._executables: dict[str, str] = {}
        self._guard = Guard()
        self._pass_env: tuple[str, ...] = ()
        self._hidden: frozenset[str] = frozenset()
        self._tag = False
        self._results: Optional[Path] = None

    def setup(self, settings: Settings) -> None:
        if self.args_template is None:
            self.args_template = settings.args_template
        self._pass_env = settings.pass_env
        self._hidden = settings.engine_secrets
        self._tag = settings.tag
        if settings.results is not None:
            self._results = Path(settings.results)
            try:
                self._results.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                accepted = f"a directory to write in ({exc.strerror})"
                raise ConfigError("MINION_RESULTS", settings.results, accepted) from None

    def close(self) -> None:
        """The minion is done: what is left of the runs ends with it (see minionize.guard)."""
        self._guard.close()

    def to_cmd(self, param: Param) -> Command:
        """The command for one parameter: a list runs as argv, a string through `sh -c`."""
        return [*self.command, *param_args(param, self.args_template)]

    def run(self, message: Message, context: RunContext) -> Outcome:
        try:
            command = self.to_cmd(message.param)
            variables = param_env(message, context.slot)
        except BadParam as exc:
            return Outcome.rejected(str(exc))
        shell = isinstance(command, str)
        if not shell and not command:
            return Outcome.rejected("empty command: no program and an empty parameter")
        if context.dry:
            shown = command if shell else shlex.join(command)
            emit(own("stdout"), f"DRY: {shown}\n".encode())
            return Outcome.success(None)
        spilled = _spill_large(variables)
        seq, variables[MARK] = self._guard.mark()
        self._guard.started(seq)
        try:
            env = self._environment(variables)
            return self._kept(message, lambda output: self._start(command, env, context, variables[MARK], output))
        finally:
            self._guard.ended(seq)
            if spilled:
                os.unlink(spilled)

    def _kept(self, message: Message, start: Callable[[RunOutput], Outcome]) -> Outcome:
        """The run, its lines tagged (MINION_TAG) and its output, exit code and parameter kept
        in MINION_RESULTS/<parameter>/ when asked; a later attempt replaces them."""
        if not self._tag and self._results is None:
            return start(PLAIN)
        tag = param_text(message.param) if self._tag else None
        directory = self._results / result_name(message.param) if self._results is not None else None
        with run_output(tag, directory) as output:
            outcome = start(output)
        if directory is not None:
            ended = "" if outcome.exit_code is None else str(outcome.exit_code)
            if outcome.signal is not None:
                ended = f"signal {outcome.signal}"
            (directory / "exit_code").write_text(ended + (" timeout" if outcome.timed_out else "") + "\n")
            (directory / "param").write_text(json.dumps(message.param, default=str) + "\n")
        return outcome

    def _environment(self, variables: dict[str, str]) -> dict[bytes, bytes]:
        """The run's environment: the minion's own but its credentials, read and encoded once,
        plus the run's MINION_*."""
        if self._base_env is None:
            inherited = child_environment(os.environ, self._pass_env, self._hidden)
            self._base_env = {os.fsencode(k): os.fsencode(v) for k, v in {**inherited, **self.env}.items()}
        env = dict(self._base_env)
        env.update((os.fsencode(k), os.fsencode(v)) for k, v in variables.items())
        return env

    def _executable(self, argv: list[str]) -> str:
        """The program's path, looked up in the run's PATH once rather than at every run."""
        program = argv[0]
        if os.sep in program:
            return program
        found = self._executables.get(program)
        if found is None:
            path = self.env.get("PATH", os.environ.get("PATH", os.defpath))
            found = which(program, path)
            if found is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
            self._executables[program] = found
        return found

    def _start(
        self, command: Command, env: dict[bytes, bytes], context: RunContext, mark: str, output: RunOutput
    ) -> Outcome:
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        try:
            child = spawn(argv, self._executable(argv), env, self.cwd)
        except ValueError as exc:
            # A NUL in what a to_cmd override returned (argv, a shell string): no attempt can succeed.
            return Outcome.rejected(f"cannot start the program: {exc}")
        except OSError as exc:
            if exc.errno == errno.E2BIG:
                # Deterministic: no other attempt can succeed.
                return Outcome.rejected(
                    f"the parameter does not fit in a command line ({exc.strerror}): Linux allows "
                    f"{ARG_MAX_BYTES // 1024} KiB per argument; read it from MINION_PARAM_FILE instead"
                )
            self._executables.pop(argv[0], None)  # removed or moved since: look again next time
            name = command if isinstance(command, str) else command[0]
            return Outcome.failure(f"cannot start {name!r}: {exc.strerror}", exit_code=127)
        stopped, out, err = supervise(child, context, mark, output)
        return _outcome(child.wait(), stopped, context, out, err)


#: The endings that make one of minionize's variables a credential: a secret
#: or a file that holds one...
_SECRET_ENDINGS = ("_PASSWORD", "_PASSWD", "_TOKEN", "_TOKEN_FILE", "_SECRET", "_CREDENTIALS", "_CREDS", "_KEY_FILE")
#: ...and, for an engine's, where a user and a password may be written (`redis://u:pw@host`,
#: PULSAR_CONNECTION) or an identity. Every engine's declared secrets end so (a test holds them to it).
_ENGINE_CREDENTIAL_ENDINGS = (*_SECRET_ENDINGS, "_URL", "_CONNECTION", "_USER", "_USERNAME")
_RUNTIME_PREFIXES = ("MINION_", "REPORTER_")


def is_credential(name: str) -> bool:
    """True for a variable that gives minionize a credential (whichever engine it is for)."""
    if not name.startswith(VARIABLE_PREFIXES):
        return False
    if name.startswith(_RUNTIME_PREFIXES):
        return name.endswith(_SECRET_ENDINGS)
    return name.endswith(_ENGINE_CREDENTIAL_ENDINGS)


def child_environment(
    environ: Mapping[str, str], passed: Iterable[str] = (), hidden: Iterable[str] = ()
) -> dict[str, str]:
    """The environment a run inherits: the minion's, less its credentials (and the `hidden`
    secrets an engine declares), except those in `passed` (MINION_PASS_ENV)."""
    kept, hidden = set(passed), set(hidden)
    return {
        name: value for name, value in environ.items()
        if name in kept or not (is_credential(name) or name in hidden)
    }


def _spill_large(variables: dict[str, str]) -> Optional[str]:
    """Move a parameter too large for the environment into a file (MINION_PARAM_FILE).

    Linux caps every single argument or environment string at 128 KiB
    (MAX_ARG_STRLEN): a larger MINION_PARAM would make the program fail to
    start whatever its arguments.
    """
    if len(variables["MINION_PARAM"].encode()) <= ENV_VALUE_MAX:
        return None
    import tempfile  # rarely needed: not at start-up

    descriptor, path = tempfile.mkstemp(prefix="minion-param-", suffix=".json")
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(variables.pop("MINION_PARAM"))
    for name in [n for n, v in variables.items() if len(v.encode()) > ENV_VALUE_MAX]:
        del variables[name]
    variables["MINION_PARAM_FILE"] = path
    return path


def _outcome(returncode: int, stopped: Optional[str], context: RunContext, stdout: OutputStream,
             stderr: OutputStream) -> Outcome:
    out, err = stdout.text(), stderr.text()
    tails = {"stdout_tail": out, "stderr_tail": err}
    signal_number = -returncode if returncode < 0 else None
    exit_code = returncode if returncode >= 0 else None
    if stopped == "cancel":
        return Outcome.interrupted(exit_code=exit_code, signal=signal_number, **tails)
    if stopped == "timeout":
        return Outcome.failure(
            f"timed out after {context.timeout:g}s", exit_code, signal=signal_number, timed_out=True, **tails
        )
    if returncode == 0:
        outcome = Outcome.success(0)
        outcome.stdout_tail, outcome.stderr_tail = out, err
        return outcome
    if signal_number is not None:
        name = signal.Signals(signal_number).name if signal_number in signal.valid_signals() else signal_number
        return Outcome.failure(f"killed by {name}", None, signal=signal_number, **tails)
    return Outcome.failure(f"exit code {returncode}", returncode, **tails)
