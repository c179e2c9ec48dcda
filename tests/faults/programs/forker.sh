#!/bin/sh
# A run that leaves grandchildren behind and exits 0 at once.
# usage: forker.sh DIR PARAM
# One grandchild sleeps in the background; another ignores SIGTERM (only the
# SIGKILL that follows can end it). Their pids go to DIR/pids.PARAM, then the
# run records itself as done.sh does.
set -eu
sleep 600 &
polite=$!
(trap '' TERM; exec sleep 600) &
deaf=$!
printf '%s %s\n' "$polite" "$deaf" >"$1/pids.$2"
printf '%s %s\n' "$2" "$$" >>"$1/done.$PPID"
