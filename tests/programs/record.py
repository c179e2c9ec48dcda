#!/usr/bin/env python3
"""Test program: record when a run starts and ends, sleep, exit with a code.

usage: record.py DIR SECONDS EXIT_CODE PARAM...
Writes DIR/<param>.<pid>.start then .end (with monotonic-free wall times),
so that tests can see which runs overlapped and which were interrupted.
"""
import os
import sys
import time

directory, seconds, code = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
name = "_".join(sys.argv[4:]) or "none"
stem = os.path.join(directory, f"{name}.{os.getpid()}")
with open(stem + ".start", "w") as f:
    f.write(f"{time.time()}\n{os.environ.get('MINION_SLOT')}\n{os.environ.get('MINION_ATTEMPT')}\n")
time.sleep(seconds)
with open(stem + ".end", "w") as f:
    f.write(f"{time.time()}\n")
sys.exit(code)
