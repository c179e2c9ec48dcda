"""A regular file or standard input, one parameter per line (like `| xargs`).

What it is
    Lines read from FILE_PATH, or from standard input when it is unset or
    `-`. Blank lines are skipped, as xargs does.

Environment
    FILE_PATH (path, default: standard input): where the parameters are.
    FILE_DECODER (identity | json, default identity): identity passes the
        line as text (a whole JSON object or array becomes that dict or
        list, as minion-push writes them); json parses each line as a JSON
        document (JSON lines).
    FILE_DEAD_LETTER (path, default none): failed parameters are appended
        there, one raw line each, so that the file can be fed back later.
        Checked at start: a file the minion can append to (created if
        missing), and not FILE_PATH itself (exit 2 otherwise). A line that
        cannot be appended later (a full disk) goes to the log, whole.

Ack and nack
    Ack forgets the line. Nack queues it again in this minion (a file has no
    broker to redeliver to another one), with its attempt number increased;
    a release (dry run) queues it again as it was.
    Fail appends it to FILE_DEAD_LETTER when set; it is always reported.

A crashed minion
    A file is read by one minion; the lines it had not finished are not
    given back. Use the execo engine (or a broker) to share work between
    minions and survive crashes.

Caveats
    The minion is drained at end of file once nothing is running or waiting
    for a retry. Reading standard input never blocks a stop: the descriptor
    is polled.
"""

from __future__ import annotations

import logging
import os
import select
import stat
from collections import deque
from typing import IO, Any, Optional

from ..config import EnvReader
from ..errors import ConfigError, QueueUnreachable
from ..message import Message
from .base import DECODERS, DeadLetter, Engine, decode_into, encode, raw_text
from .kit import Setting, read_settings

log = logging.getLogger("minionize")

_CHUNK = 1 << 16


class FileEngine(Engine):
    name = "file"
    title = "File (one parameter per line; blank lines skipped)"
    settings = (
        Setting("FILE_PATH", "path", "default: standard input"),
        Setting("FILE_DECODER", "choice", "json: one JSON document per line", default="identity", choices=DECODERS),
        Setting("FILE_DEAD_LETTER", "path", "failed parameters are appended there (not FILE_PATH)"),
    )
    any_thread = True
    input_ends = tells_drained = True  # end of file
    redelivers = False  # a file has nobody to give its lines back to
    keeps_reason = False  # FILE_DEAD_LETTER holds the lines as they were

    def __init__(
        self,
        path: Optional[str] = None,
        decoder: str = "identity",
        dead_letter: Optional[str] = None,
    ) -> None:
        self.path = None if path in (None, "-") else path
        self.decoder = decoder
        self.dead_letter = dead_letter
        self._file: Optional[IO[bytes]] = None
        self._buffer = b""
        self._eof = False
        self._line_number = 0
        self._retries: deque[Message] = deque()
        self._in_flight: set[str] = set()

    @classmethod
    def from_env(cls, env: EnvReader) -> FileEngine:
        values = read_settings(env, cls.settings)
        return cls(values["FILE_PATH"], values["FILE_DECODER"], values["FILE_DEAD_LETTER"])

    def open(self) -> None:
        if self.path is None:
            self._fd = 0  # standard input, even when sys.stdin was replaced
            self._check_dead_letter()
            return
        try:
            if not stat.S_ISREG(os.stat(self.path).st_mode):
                raise FileNotFoundError
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except PermissionError as exc:
            # A file this user may not read is the configuration's fault, not the queue's.
            raise ConfigError("FILE_PATH", self.path, f"a file this minion can read ({exc.strerror})") from None
        except (FileNotFoundError, NotADirectoryError):
            raise ConfigError("FILE_PATH", self.path, "expected an existing file, or - for stdin") from None
        except OSError as exc:
            raise QueueUnreachable(f"cannot read FILE_PATH={self.path}: {exc.strerror}") from None
        self._fd = self._file.fileno()
        self._check_dead_letter()

    def _check_dead_letter(self) -> None:
        """FILE_DEAD_LETTER can be appended to, and is not the file read: else every failure would be lost
        (a file has no broker to redeliver its lines), or read again for ever."""
        if not self.dead_letter:
            return
        try:
            with open(self.dead_letter, "ab") as out:
                same = self._file is not None and os.path.samestat(os.fstat(out.fileno()), os.fstat(self._fd))
        except OSError as exc:
            raise ConfigError("FILE_DEAD_LETTER", self.dead_letter,
                              f"a file this minion can append to ({exc.strerror})") from None
        if same:
            raise ConfigError("FILE_DEAD_LETTER", self.dead_letter,
                              "a file other than FILE_PATH (failed lines would be read again)")

    def describe(self) -> str:
        return f"file {self.path or 'stdin'} ({self.decoder})"

    def next(self, timeout: float) -> Optional[Message]:
        while True:
            line = self._pop_line()
            if line is None:
                if self._eof or not self._fill(timeout):
                    return self._retry()
                continue
            if line.strip():
                return self._message(line)

    def _retry(self) -> Optional[Message]:
        if not self._retries:
            return None
        message = self._retries.popleft()
        self._in_flight.add(message.id)
        return message

    def _pop_line(self) -> Optional[bytes]:
        newline = self._buffer.find(b"\n")
        if newline < 0:
            if self._eof and self._buffer:
                line, self._buffer = self._buffer, b""
                self._line_number += 1
                return line
            return None
        line, self._buffer = self._buffer[:newline], self._buffer[newline + 1 :]
        self._line_number += 1
        return line

    def _fill(self, timeout: float) -> bool:
        """Read what is available within `timeout`; False when nothing came."""
        if self._file is None:
            ready, _, _ = select.select([self._fd], [], [], timeout)
            if not ready:
                return False
        chunk = os.read(self._fd, _CHUNK)
        if not chunk:
            self._eof = True
        self._buffer += chunk
        return True

    def _message(self, line: bytes) -> Message:
        line = line[:-1] if line.endswith(b"\r") else line
        message = Message(id=f"{self.path or 'stdin'}:{self._line_number}", param=None, handle=line)
        decode_into(message, line, self.decoder)
        self._in_flight.add(message.id)
        return message

    def drained(self) -> bool:
        return self._eof and not self._buffer and not self._retries and not self._in_flight

    def ack(self, message: Message) -> None:
        self._in_flight.discard(message.id)

    def nack(self, message: Message) -> None:
        self._requeue(message, message.attempt + 1)

    def release(self, message: Message) -> None:
        self._requeue(message, message.attempt)

    def _requeue(self, message: Message, attempt: int) -> None:
        self._in_flight.discard(message.id)
        again = Message(message.id, message.param, attempt, message.handle)
        again.reject_reason = message.reject_reason
        self._retries.append(again)

    def fail(self, message: Message, reason: str) -> None:
        self._in_flight.discard(message.id)
        if not self.dead_letter:
            return
        try:
            with open(self.dead_letter, "ab") as out:
                out.write(bytes(message.handle) + b"\n")
        except OSError as exc:
            # Nobody would redeliver it: the line goes to the log, whole, and still counts as failed.
            line = bytes(message.handle).decode("utf-8", "backslashreplace")
            log.error("cannot append to FILE_DEAD_LETTER=%s (%s); the failed line: %s",
                      self.dead_letter, exc.strerror, line)

    def push(self, params: list[Any]) -> str:
        if self.path is None:
            raise ConfigError("FILE_PATH", None, "minion-push needs a file to append to")
        lines = []
        for param in params:
            line = encode(param, self.decoder)[0]
            if "\n" in line or "\r" in line:
                raise ConfigError("parameter", line, "the file engine takes one parameter per line")
            lines.append(line + "\n")
        with open(self.path, "a", encoding="utf-8") as out:
            out.writelines(lines)
        return f"file {self.path}"

    def dead_letters(self) -> list[DeadLetter]:
        # Shown as the brokers' engines show a body (raw_text): bytes that are not UTF-8
        # as escapes, never as the lone surrogates that would make printing them fail.
        return [DeadLetter(raw_text(line.encode("utf-8", "surrogateescape")), "") for line in self._dead_lines()[1]]

    def retry_failed(self) -> int:
        dead, lines = self._dead_lines()
        if lines:
            if self.path is None:
                raise ConfigError("FILE_PATH", None, "--retry-failed needs a file to append to")
            with open(self.path, "a", encoding="utf-8", errors="surrogateescape") as out:
                out.writelines(line + "\n" for line in lines)
            os.truncate(dead, 0)  # after the append: a crash between repeats a line, never loses one
        return len(lines)

    def _dead_lines(self) -> tuple[str, list[str]]:
        """FILE_DEAD_LETTER and its lines."""
        if not self.dead_letter:
            raise ConfigError("FILE_DEAD_LETTER", None, "the file engine keeps failed parameters only there: set it")
        try:
            with open(self.dead_letter, encoding="utf-8", errors="surrogateescape") as handle:
                return self.dead_letter, [line.rstrip("\n") for line in handle if line.strip()]
        except FileNotFoundError:
            return self.dead_letter, []
        except OSError as exc:
            raise ConfigError("FILE_DEAD_LETTER", self.dead_letter, f"cannot read it ({exc.strerror})") from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
