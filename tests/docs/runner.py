"""Runs the documentation's code blocks as a reader would, and says what differs.

Why a runner of our own: the maintained tools do not fit these docs.
pytest-examples and phmdoctest are Python-centric (phmdoctest pairs Python
blocks with output blocks; neither runs a console session), and mktestdocs
runs bash blocks without checking their output and without per-block setup,
while most of our blocks are shell sessions against servers and a Docker
engine. The whole runner is this module and blocks.py (the parser and the
``...`` matching, doctest's ELLIPSIS made line-wise).

Every runnable block runs in a fresh temporary directory (``checkout``: a
copy of the checkout's files), with HOME in a fresh temporary directory too,
a clean environment (no MINION_*, engine or DOCKER_* variable of the
developer's shell), PATH starting with the shims below and the project's
venv (minionize, minion-push, minion-status, mtop), under ``bash -euo
pipefail``. pip keeps the developer's cache (PIP_CACHE_DIR), so that a
fresh HOME does not download every package again.

What the runner changes, each counted in the summary line:

- the **docker shim** (shims/docker) talks to the private engine of
  scripts/dockerd.sh; ``docker run`` gets ``--network=host`` and maps the
  docs' host names (``redis``, ``redis.example``) to 127.0.0.1, where the
  real Redis listens, and a label by which the runner removes the block's
  containers; ``docker build`` gets the classic builder and
  ``BASE_IMAGE=minionize-test/python:bookworm``, since no image can be
  pulled here. The session starts from test_image.py's images, and tags its
  base image ``minionize/base:1.0.0`` as the docs call it;
- the **helm shim** (shims/helm): ``helm install`` is ``helm template`` and
  ``kubernetes-validate --strict`` of what it renders, as Kubernetes cannot
  run here (the chart's own guards run in both);
- the **pip shim** (shims/pip): ``pip install 'minionize[EXTRA]'`` checks
  that EXTRA is an extra of pyproject.toml and that minionize is installed,
  rather than install it again (the README's install blocks really install);
- the **substitution** ``/shared/venv`` -> a temporary directory (the
  README's shared file system).

The Redis streams a block names (``REDIS_STREAM=NAME``) are deleted before it
(unless it continues the previous block) and at the end of the session, on
the real Redis at 127.0.0.1:6379.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tests.conftest import _NAMES as TEST_NAMES
from tests.conftest import _PREFIXES as TEST_PREFIXES

from .blocks import SHELLS, Block, DocError, output_diff, output_matches

SHIMS = Path(__file__).resolve().parent / "shims"
_MARK = "\x1e"
_SPLIT = re.compile(rf"\n{_MARK}(\d+|end){_MARK}\n")
#: What the tests' clean_env removes, and what would tie a block to this pytest run.
_PREFIXES = (*TEST_PREFIXES, "TESTCONTAINERS_", "PYTEST_", "DOCS_")
_NAMES = {*TEST_NAMES, "DATABASE_URL", "VIRTUAL_ENV", "HOME"}
SUBSTITUTIONS = ("/shared/venv",)


@dataclass
class Session:
    """What every block of a test session shares: the checkout, the tools, a scratch area."""

    root: Path
    scratch: Path
    venv_bin: Path
    #: DOCS_* variables the shims read (the engine, helm, kubernetes-validate...).
    shim_env: dict[str, str]
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Per file: the directory and HOME of its last block, for ``continues``.
    last: dict[Path, tuple[Path, Path]] = field(default_factory=dict)
    #: Data blocks waiting for the next block of their file: {file: {name: text}}.
    files: dict[Path, dict[str, str]] = field(default_factory=dict)
    #: The Redis streams the blocks named, deleted at the end of the session.
    streams: set[str] = field(default_factory=set)


@dataclass
class Outcome:
    returncode: Optional[int]
    stdout: str
    stderr: str
    shims: list[str]
    substituted: bool
    #: Empty when the block did what the doc says.
    failure: str = ""


def base_env(session: Session, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not (k.startswith(_PREFIXES) or k in _NAMES)}
    env.update(session.shim_env)
    env["HOME"] = str(home)
    env["PATH"] = os.pathsep.join([str(SHIMS), str(session.venv_bin), env.get("PATH", "")])
    env["PIP_CACHE_DIR"] = env.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def copy_checkout(root: Path, target: Path) -> None:
    """The checkout's files as they are in the working tree (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, capture_output=True, check=True, timeout=30,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = root / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def substitute(text: str, session: Session) -> tuple[str, bool]:
    """The block's text with the paths that cannot exist here made temporary."""
    changed = text
    for literal in SUBSTITUTIONS:
        changed = changed.replace(literal, str(session.scratch / literal.strip("/").replace("/", "-")))
    return changed, changed != text


def place(block: Block, session: Session) -> tuple[Path, Path]:
    """The block's directory and HOME: fresh, or the previous block's with ``continues``."""
    if "continues" in block.directives:
        if block.path not in session.last:
            raise DocError(f"{block.where}: `continues` but no block of {block.path} ran before it")
        return session.last[block.path]
    base = Path(tempfile.mkdtemp(prefix="block-", dir=session.scratch))
    directory, home = base / "work", base / "home"
    directory.mkdir()
    home.mkdir()
    if "checkout" in block.directives:
        copy_checkout(session.root, directory)
    return directory, home


def script(block: Block, program: Path) -> str:
    """The bash script that runs the block: setup, the block, check."""
    lines = ['cd "$DOCS_DIR"', block.directives.get("setup", "")]
    if block.lang in SHELLS:
        lines.append(block.text)
    elif block.lang == "python":
        lines.append(f'python "{program}"')
    elif block.lang == "dockerfile":
        tag = f"doc-test/{block.path.stem.lower()}-{block.line}"
        lines.append(f'docker build -q -f "{program}" -t {tag} . >/dev/null')
    elif block.lang == "console":
        for index, command in enumerate(block.commands()):
            lines.append(f"printf '\\n{_MARK}{index}{_MARK}\\n'")
            lines.append(command.text)
        lines.append(f"printf '\\n{_MARK}end{_MARK}\\n'")
    else:
        raise DocError(f"{block.where}: a {block.lang or 'plain'} block does not run")
    lines.append(block.directives.get("check", ""))
    return "\n".join(lines) + "\n"


def run(block: Block, session: Session) -> Outcome:
    """Run one block; the outcome's `failure` says what went wrong, with the block's place."""
    directory, home = place(block, session)
    for name, text in session.files.pop(block.path, {}).items():
        (directory / name).write_text(text)
    program = Path(tempfile.mkdtemp(prefix="program-", dir=session.scratch)) / "block"
    text, substituted = substitute(block.text, session)
    program.write_text(text)
    source, _ = substitute(script(Block(block.path, block.line, block.lang, text, block.directives), program), session)
    shim_log = program.with_name("shims.log")
    env = {**base_env(session, home), "DOCS_DIR": str(directory), "DOCS_SHIM_LOG": str(shim_log),
           "DOCS_LABEL": f"minionize-doc-test={uuid.uuid4().hex[:12]}"}
    streams = re.findall(r"REDIS_STREAM=([\w:-]+)", block.text + block.directives.get("setup", ""))
    if "continues" not in block.directives:  # a block that continues may read what the last one pushed
        drop_streams(session.redis_url, streams)
    session.streams.update(streams)
    try:
        returncode, stdout, stderr = execute(source, env, directory, block)
    finally:
        remove_containers(env)
    session.last[block.path] = (directory, home)
    shims = shim_log.read_text().split() if shim_log.exists() else []
    outcome = Outcome(returncode, stdout, stderr, sorted(set(shims)), substituted)
    outcome.failure = judge(block, outcome)
    return outcome


def execute(source: str, env: dict[str, str], cwd: Path, block: Block) -> tuple[Optional[int], str, str]:
    """Run the script in a session of its own; ``ctrl-c`` interrupts it as a terminal would."""
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", source], cwd=cwd, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    out, err = _Drain(process.stdout.fileno()), _Drain(process.stderr.fileno())
    interrupt = block.directives.get("ctrl-c")
    try:
        if interrupt:
            if not _await_ready(process, block, float(interrupt), out, err):
                process.wait(timeout=block.timeout)
                return process.returncode, out.text(), err.text() + "\n(doc-test: ended before its Ctrl-C)"
            os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=block.timeout)
        return process.returncode, out.text(), err.text()
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return None, out.text(), err.text() + f"\n(doc-test: killed after {block.timeout:g}s)"
    finally:
        process.stdout.close()
        process.stderr.close()


class _Drain:
    """What a pipe has printed so far, read by a thread of its own (the runner watches it while it runs)."""

    def __init__(self, fd: int) -> None:
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, args=(fd,), daemon=True)
        self._thread.start()

    def _read(self, fd: int) -> None:
        with contextlib.suppress(OSError):  # closed under it: the process's children held it too long
            while chunk := os.read(fd, 65536):
                self._chunks.append(chunk)

    def so_far(self) -> str:
        """As text mode would give it: UTF-8, universal newlines."""
        text = b"".join(self._chunks).decode(errors="replace")
        return text.replace("\r\n", "\n").replace("\r", "\n")

    def text(self) -> str:
        """All of it, once the process ended (its children may hold the pipe a moment longer)."""
        self._thread.join(timeout=10)
        return self.so_far()


#: After the service printed what the doc shows: how long more output may still come before the Ctrl-C.
_SETTLE = 0.5


def _await_ready(process: subprocess.Popen[bytes], block: Block, most: float, out: _Drain, err: _Drain) -> bool:
    """Wait until the service is ready for its Ctrl-C, at most `most` seconds; False if it ended first.

    Ready: a console block has printed the output the doc shows for its last
    command; another block, the ``ready`` text on its stdout or stderr; with
    neither, after `most` seconds. A slow start (a loaded machine, an image
    that starts in seconds) then never meets a Ctrl-C sent too early.
    """
    deadline = time.monotonic() + most
    ready_at: Optional[float] = None
    while process.poll() is None:
        now = time.monotonic()
        if now >= deadline or (ready_at is not None and now >= ready_at + _SETTLE):
            return True
        if ready_at is None and _ready(block, out.so_far(), err.so_far()):
            ready_at = now
        time.sleep(0.05)
    return False


def _ready(block: Block, stdout: str, stderr: str) -> bool:
    text = block.directives.get("ready")
    if text:
        return text in stdout or text in stderr
    if block.lang != "console":
        return False
    commands = block.commands()
    chunks = _SPLIT.split(stdout)
    outputs = dict(zip(chunks[1::2], chunks[2::2], strict=False))
    got = outputs.get(str(len(commands) - 1))
    return got is not None and output_matches(commands[-1].expected, got)


def judge(block: Block, outcome: Outcome) -> str:
    """Empty when the block ran as the doc says; else the place, the command and the diff."""
    chunks = _SPLIT.split(outcome.stdout)
    outputs = dict(zip(chunks[1::2], chunks[2::2], strict=False))
    if block.lang == "console":
        for index, command in enumerate(block.commands()):
            got = outputs.get(str(index))
            if got is None:
                break  # it never ran: the exit code below says why
            if not output_matches(command.expected, got):
                return (f"{block.path}:{command.line}: the output differs\n$ {command.text}\n"
                        + output_diff(command.expected, got))
    if outcome.returncode == 0 and not ("ctrl-c" in block.directives and "ended before" in outcome.stderr):
        return ""
    ran = [key for key in chunks[1::2] if key != "end"]
    where, what = block.where, block.text
    if block.lang == "console" and ran and "end" not in chunks[1::2]:
        command = block.commands()[int(ran[-1])]
        where, what = f"{block.path}:{command.line}", f"$ {command.text}"
    status = "was killed" if outcome.returncode is None else f"exited {outcome.returncode}"
    tails = f"--- stdout\n{outcome.stdout[-3000:]}\n--- stderr\n{outcome.stderr[-3000:]}"
    return f"{where}: the block {status}\n{what}\n{tails}"


def remove_containers(env: dict[str, str]) -> None:
    """Remove what the block's `docker run`s left (the shim labels them)."""
    docker, host = env.get("DOCS_REAL_DOCKER"), env.get("DOCS_DOCKER_HOST")
    if not docker or not host:
        return
    docker_env = {**env, "DOCKER_HOST": host}
    found = subprocess.run(
        [docker, "ps", "-aq", "--filter", f"label={env['DOCS_LABEL']}"],
        capture_output=True, text=True, env=docker_env, timeout=30,
    ).stdout.split()
    if found:
        subprocess.run([docker, "rm", "-f", *found], capture_output=True, env=docker_env, timeout=60)


def drop_streams(url: str, streams: list[str] | set[str]) -> None:
    if not streams:
        return
    import redis

    with redis.Redis.from_url(url, socket_timeout=5) as client:
        client.delete(*streams, *(f"{name}:dead" for name in streams))


#: What the docs tests of this pytest run did, for the summary line.
TALLY: Counter[str] = Counter()


def summary(tally: Counter[str]) -> str:
    """One line: how many blocks ran (through which shim), and how many are marked."""
    if not tally["ran"] and not tally["failed"]:
        return ""
    shims = [f"{tally[key]} through the {key[5:]} shim" for key in sorted(tally) if key.startswith("shim:")]
    if tally["substituted"]:
        shims.append(f"{tally['substituted']} with /shared/venv substituted")
    ran = f"docs: {tally['ran']} blocks ran" + (f" ({', '.join(shims)})" if shims else "")
    parts = [ran, f"{tally['data']} data blocks read by the next block", f"{tally['marked']} marked not runnable"]
    if tally["failed"]:
        parts.append(f"{tally['failed']} failed")
    return ", ".join(parts)
