#!/bin/sh
# The entrypoint of the minionize image, run by tini (PID 1):
#
#   IMG PROGRAM [ARGS...]          exec minionize PROGRAM ARGS...: a minion that
#                                  appends each parameter to PROGRAM ARGS
#   IMG                            exec minionize: the command comes from
#                                  .minionize.yml in /scratch (MINION_CONFIG)
#   IMG minionize [ARGS...]        the same as IMG ARGS... (no double minionize)
#   IMG --exec COMMAND [ARGS...]   the escape hatch: exec COMMAND ARGS... as
#                                  they are, without minionize (a shell, a
#                                  one-off push, a debugging session)
#
# The image's CMD is `--help`: minionize prints its usage and exits 0.
set -eu

case "${1-}" in
--exec)
    shift
    if [ "$#" -eq 0 ]; then
        echo "minionize image: --exec needs a command, e.g. --exec sh" >&2
        exit 2
    fi
    exec "$@"
    ;;
minionize)
    shift
    ;;
esac

exec minionize "$@"
