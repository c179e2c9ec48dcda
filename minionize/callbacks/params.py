"""A parameter turned into the arguments of a command line.

A string is split into words as a shell would (quotes respected) but never
interpreted, a list adds one argument per item, a dict adds one JSON
argument, unless MINION_ARGS maps it with a template such as
`--lr {lr} --seed {seed}`.

Parameters come from queues that anybody may fill, so every way from a
parameter to arguments ends in a list of strings that `execve` accepts, or
in BadParam with a one-line reason: never another exception, and never more
time than a few passes over the parameter (shlex takes 30 s to split one
1 MiB word: `split_words` does it in linear time).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import string
from typing import Any, Optional

from ..excerpt import safe_text
from ..message import Param

#: Linux's limit for one argument or environment string, its NUL included (MAX_ARG_STRLEN).
ARG_MAX_BYTES = 128 * 1024
#: What a shell would split on: shlex's whitespace in POSIX mode.
_SPACE = re.compile(r"[ \t\r\n]+")
_SPECIAL = re.compile(r"""['"\\]""")
#: One piece of a word: unquoted text, a single-quoted or double-quoted string, an escaped character.
_PIECE = re.compile(r"""[^ \t\r\n'"\\]+|'[^']*'|"(?:[^"\\]|\\.)*"|\\.""", re.DOTALL)
#: A double-quoted string that the text ends inside of, just after a backslash.
_OPEN_ESCAPE_IN_QUOTES = re.compile(r'"(?:[^"\\]|\\.)*\\\Z', re.DOTALL)
#: Inside double quotes, POSIX shells (and shlex) unescape only a backslash and a double quote.
_QUOTED_ESCAPE = re.compile(r'\\([\\"])')


class BadParam(ValueError):
    """A parameter that cannot become arguments (the message is set aside)."""


def param_args(param: Param, template: Optional[str] = None) -> list[str]:
    """The arguments a parameter adds to the command line; BadParam when it cannot have any."""
    if template is not None:
        args = _from_template(param, template)
    elif isinstance(param, (bytes, bytearray)):
        try:
            text = bytes(param).decode("utf-8")
        except UnicodeDecodeError:
            raise BadParam("parameter is not UTF-8 text") from None
        args = _words(text)
    elif isinstance(param, str):
        args = _words(param)
    elif param is None:
        args = []
    elif isinstance(param, (list, tuple)):
        args = [_scalar(item) for item in param]
    elif isinstance(param, dict):
        args = [_json(param)]
    else:
        args = [_scalar(param)]
    # What execve counts: each string with its NUL, and a pointer to it.
    total = sum(check_arg(arg) + 1 + 8 for arg in args)
    if total > _arg_max():
        raise BadParam(_too_large(f"{len(args)} arguments, {_kib(total)} with their pointers"))
    return args


def check_arg(arg: str) -> int:
    """The size of `arg` in bytes; BadParam unless it can be one argument of execve
    (no NUL, UTF-8, under MAX_ARG_STRLEN)."""
    if "\x00" in arg:
        raise BadParam("parameter contains a NUL character")
    try:
        size = len(arg.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadParam("parameter contains text that is not Unicode (a lone surrogate)") from None
    if size >= ARG_MAX_BYTES:
        raise BadParam(_too_large(f"an argument of {_kib(size)}"))
    return size


def _too_large(what: str) -> str:
    return (
        f"the parameter does not fit in a command line ({what}): Linux allows {ARG_MAX_BYTES // 1024} KiB "
        f"per argument and {_kib(_arg_max())} for all of them; read it from MINION_PARAM_FILE instead"
    )


def _kib(size: int) -> str:
    return f"{size / 1024:.0f} KiB" if size < 1 << 20 else f"{size / (1 << 20):.1f} MiB"


def _arg_max() -> int:
    """The kernel's limit for argv and the environment together (ARG_MAX, a quarter of the stack limit)."""
    try:
        return max(ARG_MAX_BYTES, os.sysconf("SC_ARG_MAX"))
    except (ValueError, OSError):
        return 2 << 20


def _words(text: str) -> list[str]:
    if "\x00" in text:
        raise BadParam("parameter contains a NUL character")
    if len(text) > _arg_max():
        # No split can make it fit: say so before spending any time on it.
        raise BadParam(_too_large(f"{_kib(len(text))} of text"))
    try:
        return split_words(text)
    except ValueError as exc:
        raise BadParam(f"cannot split the parameter into arguments ({exc})") from None


def split_words(text: str) -> list[str]:
    """shlex.split(text), in time linear in the text (shlex's is quadratic in a word's length)."""
    if _SPECIAL.search(text) is None:
        return [word for word in _SPACE.split(text) if word]
    words: list[str] = []
    parts: Optional[list[str]] = None
    position, end = 0, len(text)
    while position < end:
        space = _SPACE.match(text, position)
        if space is not None:
            if parts is not None:
                words.append("".join(parts))
                parts = None
            position = space.end()
            continue
        piece = _PIECE.match(text, position)
        if piece is None:
            raise ValueError(_unsplittable(text, position))
        if parts is None:
            parts = []
        parts.append(_unquote(piece.group()))
        position = piece.end()
    if parts is not None:
        words.append("".join(parts))
    return words


def _unsplittable(text: str, position: int) -> str:
    """Why no piece starts at `position`, in shlex's words: a quote or an escape left open."""
    if text[position] == "\\" or _OPEN_ESCAPE_IN_QUOTES.match(text, position):
        return "No escaped character"
    return "No closing quotation"


def _unquote(piece: str) -> str:
    first = piece[0]
    if first == "'":
        return piece[1:-1]
    if first == '"':
        return _QUOTED_ESCAPE.sub(r"\1", piece[1:-1])
    if first == "\\":
        return piece[1]
    return piece


def _json(value: Any) -> str:
    """JSON text of a value (ASCII: no character of it can be refused by execve)."""
    try:
        return json.dumps(value, default=str)
    except RecursionError:
        raise BadParam("parameter nested too deeply to be written as JSON") from None
    except (ValueError, TypeError) as exc:  # an integer of 4,300 digits or more, a cycle
        raise BadParam(f"parameter cannot be written as JSON ({safe_text(str(exc), 200)})") from None


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else _json(value)


def _from_template(param: Param, template: str) -> list[str]:
    fields = _Fields(param if isinstance(param, dict) else {})
    fields.whole = param
    args = []
    # Split the template first: a value with spaces stays one argument.
    for token in shlex.split(template):
        try:
            args.append(string.Formatter().vformat(token, (), fields))
        except KeyError as exc:
            name = safe_text(str(exc.args[0]), 100)
            raise BadParam(f"MINION_ARGS uses {{{name}}}, missing from the parameter") from None
        except BadParam:
            raise
        except Exception as exc:  # a format spec or an index this value does not take, a 4,300-digit integer
            why = safe_text(f"{type(exc).__name__}: {exc}", 200)
            raise BadParam(f"MINION_ARGS cannot format this parameter ({why})") from None
    return args


class _Fields(dict):
    """Template fields: non-string values are formatted as JSON scalars (true, null).

    `{param}` is the whole parameter (as JSON unless a string), written only
    when the template asks for it.
    """

    whole: Param = None

    def __getitem__(self, key: str) -> Any:
        if key == "param" and not super().__contains__(key):
            return self.whole if isinstance(self.whole, str) else _json(self.whole)
        value = super().__getitem__(key)
        return value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else _scalar(value)
