#!/usr/bin/env python3
"""Test program: print its arguments as JSON, one line, and selected env vars."""
import json
import os
import sys

PREFIXES = ("MINION_PARAM", "MINION_ATTEMPT", "MINION_MESSAGE_ID", "MINION_SLOT", "FROM_")
names = [n for n in sorted(os.environ) if n.startswith(PREFIXES)]
print(json.dumps({"argv": sys.argv[1:], "env": {n: os.environ[n] for n in names}}), flush=True)
