#!/usr/bin/env python3
"""Test program: print how the parameter reached it (argv count, env or file, size)."""
import json
import os
import sys

path = os.environ.get("MINION_PARAM_FILE")
if path:
    with open(path) as handle:
        text = handle.read()
else:
    text = os.environ["MINION_PARAM"]
print(json.dumps({"argc": len(sys.argv) - 1, "via": "file" if path else "env", "size": len(json.loads(text))}))
