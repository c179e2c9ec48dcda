"""A run's output on the minion's own: whole lines, one run at a time, and a tail for the reports."""

from __future__ import annotations

import threading
from typing import IO

#: How much of each output stream the reports keep.
TAIL_BYTES = 4096
#: A line longer than that is written out before its end comes.
LONG_LINE = 65536
_OUTPUT_LOCK = threading.Lock()


def emit(out: IO[bytes], data: bytes) -> None:
    """Write whole lines to our own output, one run at a time."""
    with _OUTPUT_LOCK:
        try:
            out.write(data)
            out.flush()
        except (OSError, ValueError):
            pass  # our own stdout is gone: the run still counts


class OutputStream:
    """Forwards one output stream line by line and keeps its tail for the reports."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.partial = b""
        self.tail = bytearray()

    def feed(self, data: bytes) -> None:
        self.tail += data
        del self.tail[:-TAIL_BYTES]
        data = self.partial + data
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        if cut:
            emit(self.out, data[:cut])
        if len(self.partial) > LONG_LINE:
            emit(self.out, self.partial)
            self.partial = b""

    def close(self) -> None:
        """Write out an unfinished last line."""
        if self.partial:
            emit(self.out, self.partial + b"\n")
            self.partial = b""

    def text(self) -> str:
        return bytes(self.tail).decode("utf-8", "replace")
