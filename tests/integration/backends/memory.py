"""The memory engine has no backend here: its queue lives in one minion's process.

The process suites need a queue that several processes and minion-push can
reach; the in-process API suite (api_backends.py) covers memory.
"""

from __future__ import annotations

from .base import Backend

BACKENDS: tuple[type[Backend], ...] = ()
