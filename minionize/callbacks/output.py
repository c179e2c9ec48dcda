"""A run's output on the minion's own: whole lines, one run at a time, and a tail for the reports.

With MINION_TAG each forwarded line starts with the run's parameter and a tab
(GNU parallel's --tag); with MINION_RESULTS all of a run's output is also kept
in files (GNU parallel's --results): `run_output` says so for the runs of the
thread that enters it, since the streams are made where the child is supervised.
"""

from __future__ import annotations

import contextlib
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
#: The tag and the result files of the run that the current thread supervises.
_RUN = threading.local()


def emit(out: IO[bytes], data: bytes) -> None:
    """Write whole lines to our own output, one run at a time."""
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


@contextlib.contextmanager
def run_output(tag: Optional[str], results: Optional[Path]) -> Iterator[None]:
    """The output streams made by this thread meanwhile tag their lines and copy them to `results`."""
    files = {}
    if results is not None:
        results.mkdir(parents=True, exist_ok=True)
        files = {id(sys.stdout.buffer): open(results / "stdout", "wb"),  # noqa: SIM115 - closed below
                 id(sys.stderr.buffer): open(results / "stderr", "wb")}  # noqa: SIM115
    _RUN.tag, _RUN.files = (tag.encode("utf-8", "backslashreplace") + b"\t" if tag is not None else b""), files
    try:
        yield
    finally:
        _RUN.tag, _RUN.files = b"", {}
        for handle in files.values():
            handle.close()


class OutputStream:
    """Forwards one output stream line by line and keeps its tail for the reports."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.partial = b""
        self.tail = bytearray()
        self.tag: bytes = getattr(_RUN, "tag", b"")
        self.copy: Optional[IO[bytes]] = getattr(_RUN, "files", {}).get(id(out))

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
