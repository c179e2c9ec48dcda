#!/bin/sh
# A run on a broken node: the program it needs is not installed there.
# usage: broken.sh ARGS... -- fails at once with the shell's "not found", exit code 127,
# as a job script does whose tool is missing (or whose interpreter or library is).
exec /nonexistent/minionize-fault-tool "$@"
