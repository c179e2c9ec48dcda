#!/usr/bin/env python3
"""Test program: start a grandchild that sleeps, write its pid, then hang.

usage: grandchild.py PIDFILE PARAM
"""
import subprocess
import sys
import time

child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1], "w") as f:
    f.write(str(child.pid))
time.sleep(600)
