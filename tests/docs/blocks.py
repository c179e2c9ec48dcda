"""The code blocks of the documentation, their doc-test directives, and output matching.

A block is a fenced block of a Markdown file. Its language says what it is:

- ``console``: a terminal session. A line starting with ``$ `` is a command
  (a line ending in ``\\`` continues it), the lines after it are what the
  command prints on stdout; a line that is exactly ``...`` matches any
  number of lines, and ``...`` inside a line matches any text in that line
  (doctest's ELLIPSIS, line by line);
- ``bash``, ``sh``, ``shell``: a script, run under ``bash -euo pipefail``;
- ``python``: a script, run with the project's venv's python;
- ``dockerfile``: built with ``docker build``;
- ``yaml``: data, written to a file by a ``file:`` directive for the next
  runnable block to read;
- no language: a diagram or text, never run.

Directives are HTML comments just before the block (GitHub does not show
them), one or more ``<!-- doc-test: KEY: VALUE -->``; a value may span lines:

- ``skip: REASON``: the block cannot run here (a real cluster, a cloud);
- ``setup: BASH``: hidden commands run first, in the block's directory and
  shell (exports carry into the block);
- ``check: BASH``: hidden commands run after the block, in its shell;
- ``continues``: run in the directory and HOME of the previous block of the
  same file, rather than fresh ones;
- ``checkout``: the directory is a copy of the checkout's files;
- ``ctrl-c: SECONDS``: the block is a service: once it is ready, and
  after that long at most, it gets SIGINT, as a terminal's Ctrl-C, and must
  then end with exit code 0. Ready: a console block has printed the output
  the doc shows; another block has printed the ``ready`` text (on stdout or
  stderr); a block with neither waits the whole SECONDS;
- ``ready: TEXT``: (with ``ctrl-c``) what the service prints once it is up;
- ``timeout: SECONDS`` (default 60, 900 for a block that builds an image);
- ``file: NAME``: (data blocks) written to NAME for the next block.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SHELLS = frozenset({"bash", "sh", "shell"})
#: Languages of the blocks that run (the others are data or text).
RUNNABLE = SHELLS | {"console", "python", "dockerfile"}
DATA = frozenset({"yaml"})
KEYS = frozenset({"skip", "setup", "check", "continues", "checkout", "ctrl-c", "ready", "timeout", "file"})
DEFAULT_TIMEOUT = 60.0
#: For a block that builds an image: with a cold layer cache (pyproject.toml
#: changed), the build installs every dependency.
BUILD_TIMEOUT = 900.0

_FENCE = re.compile(r"^(\s*)(```+)\s*([\w+-]*)\s*$")
_DIRECTIVE = re.compile(r"<!--\s*doc-test:\s*(.*?)\s*-->", re.S)


class DocError(ValueError):
    """A block or directive the runner cannot make sense of: a mistake in the doc."""


@dataclass(frozen=True)
class Command:
    """One ``$`` command of a console block, and what it should print."""

    line: int
    text: str
    expected: str


@dataclass(frozen=True)
class Block:
    path: Path
    #: The line of the opening fence, counting from 1.
    line: int
    lang: str
    text: str
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def skip(self) -> str:
        return self.directives.get("skip", "")

    @property
    def runnable(self) -> bool:
        return self.lang in RUNNABLE and not self.skip

    @property
    def timeout(self) -> float:
        builds = self.lang == "dockerfile" or "docker build" in self.text
        return float(self.directives.get("timeout", BUILD_TIMEOUT if builds else DEFAULT_TIMEOUT))

    def commands(self) -> list[Command]:
        """The commands of a console block."""
        return parse_console(self.text, self.line + 1)


def parse_directives(comments: list[str]) -> dict[str, str]:
    """``{key: value}`` of the doc-test comments before a block."""
    found: dict[str, str] = {}
    for body in comments:
        key, _, value = body.partition(":")
        key = key.strip()
        if key not in KEYS:
            raise DocError(f"unknown doc-test directive {key!r} (known: {', '.join(sorted(KEYS))})")
        if key in found:
            raise DocError(f"doc-test directive {key!r} given twice")
        found[key] = value.strip()
    if "ready" in found and "ctrl-c" not in found:
        raise DocError("doc-test directive 'ready' is for a service: give 'ctrl-c' too")
    return found


def parse_markdown(text: str, path: Path) -> list[Block]:
    """Every fenced block of `text`, with the directives of the comments right before it."""
    blocks: list[Block] = []
    lines = text.splitlines()
    pending: list[str] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index = _pending_after(lines, index, pending)
            continue
        indent, fence, lang = opening.groups()
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        if end == len(lines):
            raise DocError(f"{path}:{index + 1}: the block is never closed")
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[index + 1:end])
        try:
            directives = parse_directives(pending)
        except DocError as exc:
            raise DocError(f"{path}:{index + 1}: {exc}") from None
        blocks.append(Block(path, index + 1, lang.lower(), body + "\n" if body else "", directives))
        pending = []
        index = end + 1
    return blocks


def _pending_after(lines: list[str], index: int, pending: list[str]) -> int:
    """Collect the doc-test comments starting at `index` (prose between them and a block drops them)."""
    line = lines[index]
    if "<!--" in line and "doc-test:" in line:
        end = index
        while "-->" not in lines[end] and end + 1 < len(lines):
            end += 1
        chunk = "\n".join(lines[index:end + 1])
        pending.extend(match.group(1) for match in _DIRECTIVE.finditer(chunk))
        return end + 1
    if line.strip() and not (line.strip().startswith("<!--") and line.strip().endswith("-->")):
        pending.clear()  # prose between the directives and a block: they were for nothing
    return index + 1


def parse_console(text: str, first_line: int) -> list[Command]:
    """The ``$`` commands of a console session and the output shown after each."""
    commands: list[Command] = []
    lines = text.splitlines()
    index = 0
    if lines and not lines[0].startswith("$ "):
        raise DocError(f"line {first_line}: a console block starts with a `$ ` command")
    while index < len(lines):
        start = index
        command = lines[index][2:]
        while command.endswith("\\") and index + 1 < len(lines):
            index += 1
            command += "\n" + lines[index]
        index += 1
        output: list[str] = []
        while index < len(lines) and not lines[index].startswith("$ "):
            output.append(lines[index])
            index += 1
        expected = "\n".join(output) + "\n" if output else ""
        commands.append(Command(first_line + start, command, expected))
    return commands


def _pattern(expected: str) -> re.Pattern[str]:
    parts = []
    for line in expected.splitlines():
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.split("...")) + r"\n")
    return re.compile("".join(parts))


def output_matches(expected: str, got: str) -> bool:
    """Whether `got` is what `expected` shows, ``...`` standing for any lines or any text in a line."""
    if got and not got.endswith("\n"):
        got += "\n"
    return _pattern(expected).fullmatch(got) is not None


def output_diff(expected: str, got: str) -> str:
    """A unified diff of the output the doc shows and the output the command printed."""
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True), got.splitlines(keepends=True), "the doc shows", "the command printed"
        )
    ) or "(both empty)"


def iter_docs(root: Path, patterns: tuple[str, ...]) -> Iterator[Path]:
    """The Markdown files of `patterns` (globs from `root`), in a stable order."""
    seen: set[Path] = set()
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            if path not in seen and ".venv" not in path.parts:
                seen.add(path)
                yield path
