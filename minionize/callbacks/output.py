"""A run's output on the minion's own: whole lines, one run at a time, and a tail for the reports.

With MINION_TAG each forwarded line starts with the run's parameter and a tab
(GNU parallel's --tag); with MINION_RESULTS all of a run's output is also kept
in files (GNU parallel's --results). `run_output` makes a run's `RunOutput`,
which the supervisor of the child turns into its two streams.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Optional

#: How much of each output stream the reports keep.
TAIL_BYTES = 4096
#: A line longer than that is written out before its end comes.
LONG_LINE = 65536
#: The longest directory name a parameter gets under MINION_RESULTS (file systems allow 255 bytes).
NAME_MAX = 120
_OUTPUT_LOCK = threading.Lock()


def own(name: str) -> Optional[IO[bytes]]:
    """The minion's own "stdout" or "stderr", as bytes; None when it has none (started with it
    closed, or a host program set it to None)."""
    return getattr(getattr(sys, name, None), "buffer", None)


def emit(out: Optional[IO[bytes]], data: bytes) -> None:
    """Write whole lines to our own output, one run at a time."""
    if out is None:
        return  # no output of our own: the run still counts, its tail is kept
    with _OUTPUT_LOCK:
        try:
            out.write(data)
            out.flush()
        except (OSError, ValueError):
            pass  # our own stdout is gone: the run still counts


def param_text(param: Any) -> str:
    """A parameter as one line of text: a string as it is, anything else as compact JSON."""
    text = param if isinstance(param, str) else json.dumps(param, separators=(",", ":"), default=str)
    return text.replace("\r", " ").replace("\n", " ")


def result_name(param: Any) -> str:
    """A safe directory name for a parameter: escaped as in URLs, never `.`/`..`, cut and hashed when long."""
    text = param if isinstance(param, str) else json.dumps(param, separators=(",", ":"), default=str)
    name = urllib.parse.quote(text.encode("utf-8", "surrogateescape"), safe="-_.,=+@")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name) > NAME_MAX or not name:
        digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        name = f"{name[:NAME_MAX - 18]}--{digest}"
    return name


@dataclasses.dataclass(frozen=True)
class RunOutput:
    """Where one run's output goes besides the minion's own stdout and stderr."""

    #: What starts each forwarded line (MINION_TAG): the parameter and a tab, or nothing.
    tag: bytes = b""
    #: Files that get a copy of everything the run writes (MINION_RESULTS).
    stdout_copy: Optional[IO[bytes]] = None
    stderr_copy: Optional[IO[bytes]] = None

    def streams(self) -> tuple[OutputStream, OutputStream]:
        """The run's stdout and stderr streams, forwarded to the minion's own."""
        return (OutputStream(own("stdout"), self.tag, self.stdout_copy),
                OutputStream(own("stderr"), self.tag, self.stderr_copy))


#: A run whose output is only forwarded.
PLAIN = RunOutput()


@contextlib.contextmanager
def run_output(tag: Optional[str], results: Optional[Path]) -> Iterator[RunOutput]:
    """A run's output tagged with `tag` and copied into `results`/stdout and stderr, for the `with` block."""
    prefix = tag.encode("utf-8", "backslashreplace") + b"\t" if tag is not None else b""
    if results is None:
        yield RunOutput(prefix)
        return
    results.mkdir(parents=True, exist_ok=True)
    with open(results / "stdout", "wb") as stdout, open(results / "stderr", "wb") as stderr:
        yield RunOutput(prefix, stdout, stderr)


class OutputStream:
    """Forwards one output stream line by line and keeps its tail for the reports."""

    def __init__(self, out: Optional[IO[bytes]], tag: bytes = b"", copy: Optional[IO[bytes]] = None) -> None:
        self.out = out
        self.partial = b""
        self.tail = bytearray()
        self.tag = tag
        self.copy = copy

    def feed(self, data: bytes) -> None:
        self.tail += data
        del self.tail[:-TAIL_BYTES]
        if self.copy is not None:
            self._keep(data)
        data = self.partial + data
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        if cut:
            self._emit(data[:cut])
        if len(self.partial) > LONG_LINE:
            self._emit(self.partial)
            self.partial = b""

    def close(self) -> None:
        """Write out an unfinished last line."""
        if self.partial:
            self._emit(self.partial + b"\n")
            self.partial = b""

    def text(self) -> str:
        return bytes(self.tail).decode("utf-8", "replace")

    def _emit(self, lines: bytes) -> None:
        if self.tag:
            lines = b"".join(self.tag + line for line in lines.splitlines(keepends=True))
        emit(self.out, lines)

    def _keep(self, data: bytes) -> None:
        try:
            self.copy.write(data)  # type: ignore[union-attr]
        except (OSError, ValueError):
            self.copy = None  # a full disk costs the copy, not the run
