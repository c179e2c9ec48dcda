#!/bin/sh
# A run of the fault-injection suite: sleep a little, then record that it finished.
# usage: done.sh DIR SECONDS PARAM
# Appends "PARAM PID" to DIR/done.<minion pid>: one line per finished run,
# written with O_APPEND (>>) in a single write, so concurrent runs of one
# minion never mix their lines. A run killed before this line did not count.
set -eu
[ "$2" = 0 ] || sleep "$2"
printf '%s %s\n' "$3" "$$" >>"$1/done.$PPID"
