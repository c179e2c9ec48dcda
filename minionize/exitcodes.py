"""The exit codes of every minionize command, named in one place."""

#: The queue was drained, the idle timeout passed, or a warm stop finished.
OK = 0
#: An unexpected internal error (a bug: please report it).
INTERNAL = 1
#: Bad configuration: nothing was taken from the queue.
CONFIG = 2
#: The queue could not be reached at start-up.
UNREACHABLE = 3
#: A broken node: its runs kept failing at once, MINION_MAX_STRIKES strikes
#: in a row (minionize.health). Started again on the same node, it would do the same.
BROKEN_NODE = 4
#: The minion set parameters aside and otherwise ended well (as xargs says 123);
#: MINION_FAILED_EXIT_CODE changes it, 0 turns it off.
SET_ASIDE = 123
#: A second SIGTERM/SIGINT stopped the minion at once (128 + SIGINT, as shells do).
COLD_STOP = 130
#: A console command (minion-push, minion-status) stopped by Ctrl-C (SIGINT).
INTERRUPTED = 130
