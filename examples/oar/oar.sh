#!/usr/bin/env bash

#OAR -n kpd
#OAR -l nodes=1,walltime=1:0:0
#OAR -t besteffort
#OAR -t idempotent
# The checkpoint signal, 12 (SIGUSR2), 120 s before the walltime: minionize drains.
#OAR --checkpoint 120
#OAR --signal 12

# oarsub --array 10 -S ./oar.sh

set -eux

# minionize's virtualenv on the shared file system, made once on the frontend:
# nothing is installed on the nodes, no root needed.
venv=${MINIONIZE_VENV:-$HOME/venvs/minionize}
# The checkpoint signal is a warm stop: running parameters finish, none is
# taken, and the job exits 99, which OAR resubmits for an idempotent job.
export MINION_DRAIN_SIGNAL=SIGUSR2 MINION_DRAIN_EXIT_CODE=99

# exec: the minion is the job's process, the one OAR signals.
exec "$venv/bin/minionize" echo "hello from $OAR_JOB_ID"
