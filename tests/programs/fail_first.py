#!/usr/bin/env python3
"""Test program: fail the first attempt of every parameter, succeed afterwards.

usage: fail_first.py DIR PARAM — records DIR/<param>.<attempt>.<pid> each run.
"""
import os
import sys

attempt = os.environ.get("MINION_ATTEMPT", "?")
open(os.path.join(sys.argv[1], f"{sys.argv[2]}.{attempt}.{os.getpid()}"), "w").close()
sys.exit(1 if attempt == "1" else 0)
