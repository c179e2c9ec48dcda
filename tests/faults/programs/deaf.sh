#!/bin/sh
# A run that ignores SIGTERM, with a child that inherits that: only SIGKILL ends them.
# usage: deaf.sh DIR PARAM
# Writes "PID CHILD_PID" to DIR/pids.PARAM once both ignore SIGTERM, then waits.
set -eu
trap '' TERM
sleep 600 &
printf '%s %s\n' "$$" "$!" >"$1/pids.$2.tmp"
mv "$1/pids.$2.tmp" "$1/pids.$2"
wait
