"""A parameter turned into the arguments of a command line.

A string is split into words as a shell would (quotes respected) but never
interpreted, a list adds one argument per item, a dict adds one JSON
argument, unless MINION_ARGS maps it with a template such as
`--lr {lr} --seed {seed}`.
"""

from __future__ import annotations

import json
import shlex
import string
from typing import Any, Optional

from ..message import Param

#: Linux's limit for one argument or environment string (MAX_ARG_STRLEN).
ARG_MAX_BYTES = 128 * 1024


class BadParam(ValueError):
    """A parameter that cannot become arguments (the message is set aside)."""


def param_args(param: Param, template: Optional[str] = None) -> list[str]:
    """The arguments a parameter adds to the command line."""
    if template is not None:
        return _from_template(param, template)
    if isinstance(param, (bytes, bytearray)):
        try:
            param = bytes(param).decode("utf-8")
        except UnicodeDecodeError:
            raise BadParam("parameter is not UTF-8 text") from None
    if isinstance(param, str):
        if "\x00" in param:
            raise BadParam("parameter contains a NUL character")
        try:
            return shlex.split(param)
        except ValueError as exc:
            raise BadParam(f"cannot split the parameter into arguments ({exc})") from None
    if param is None:
        return []
    if isinstance(param, (list, tuple)):
        return [_scalar(item) for item in param]
    if isinstance(param, dict):
        return [json.dumps(param, default=str)]
    return [_scalar(param)]


def _scalar(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if "\x00" in text:
        raise BadParam("parameter contains a NUL character")
    return text


def _from_template(param: Param, template: str) -> list[str]:
    fields: dict[str, Any] = dict(param) if isinstance(param, dict) else {}
    fields.setdefault("param", param if isinstance(param, str) else json.dumps(param, default=str))
    args = []
    # Split the template first: a value with spaces stays one argument.
    for token in shlex.split(template):
        try:
            args.append(string.Formatter().vformat(token, (), _Fields(fields)))
        except KeyError as exc:
            raise BadParam(f"MINION_ARGS uses {{{exc.args[0]}}}, missing from the parameter") from None
        except (IndexError, ValueError, AttributeError) as exc:
            raise BadParam(f"MINION_ARGS cannot format this parameter ({exc})") from None
    return args


class _Fields(dict):
    """Template fields: non-string values are formatted as JSON scalars (true, null)."""

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        return value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else _scalar(value)
