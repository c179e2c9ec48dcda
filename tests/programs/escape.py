#!/usr/bin/env python3
"""Test program: a run that tries to outlive its limits.

usage: escape.py PIDDIR HOW SECONDS [deaf]   (HOW SECONDS [deaf] usually the parameter)

HOW is a comma-separated list of what the run does before it sleeps SECONDS
and exits 0:
  redirect  send its own stdout and stderr to /dev/null (`exec >/dev/null 2>&1`)
  setsid    start `sleep 600` in a session of its own (`setsid sleep 600 &`)
  daemon    double-fork a daemon: new session, stdio on /dev/null, sleeps 600 s
deaf: every process ignores SIGTERM. Each process it makes (itself included)
writes its pid into PIDDIR as an empty file named after the pid.
"""
import os
import signal
import subprocess
import sys
import time

piddir, how, seconds = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])
deaf = "deaf" in sys.argv[4:]


def record(pid: int) -> None:
    open(os.path.join(piddir, str(pid)), "w").close()


def daemon() -> None:
    if os.fork():
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    record(os.getpid())
    time.sleep(600)
    os._exit(0)


if deaf:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by what it starts
record(os.getpid())
if "setsid" in how:
    record(subprocess.Popen(["setsid", "sleep", "600"]).pid)
if "daemon" in how:
    daemon()
if "redirect" in how:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
time.sleep(seconds)
