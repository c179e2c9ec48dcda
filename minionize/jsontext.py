"""JSON from outside the process (arguments, files, reports, the sweep's own files): read without a traceback.

`json.loads` raises RecursionError, not a ValueError, on a document nested
deeper than Python's recursion limit (`[[[[...]]]]`, a few kilobytes): a
command that catches only bad JSON dies on it. `loads` makes it one more
kind of bad JSON.
"""

from __future__ import annotations

import json
from typing import Any, Union


class TooDeep(ValueError):
    """A JSON document nested too deeply for Python's parser."""

    msg = "nested too deeply"


def loads(text: Union[str, bytes, bytearray]) -> Any:
    """`json.loads`; a document nested too deeply is a ValueError (TooDeep), as bad JSON is."""
    try:
        return json.loads(text)
    except RecursionError:
        raise TooDeep(TooDeep.msg) from None
