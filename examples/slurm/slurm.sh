#!/usr/bin/env bash

#SBATCH --job-name=kpd
#SBATCH --time=1:00:00
#SBATCH --array=1-10
# SIGUSR2 to the batch shell (B:), 120 s before the time limit: minionize drains.
#SBATCH --signal=B:USR2@120

# sbatch ./slurm.sh

set -eux

# minionize's virtualenv on the shared file system, made once on the login
# node: nothing is installed on the compute nodes, no root needed.
venv=${MINIONIZE_VENV:-$HOME/venvs/minionize}
# The signal of --signal is a warm stop: running parameters finish, none is
# taken, and the job exits 0.
export MINION_DRAIN_SIGNAL=SIGUSR2

# exec: the minion is the batch shell, the process that --signal=B: reaches.
exec "$venv/bin/minionize" echo "hello from $SLURM_JOB_ID"
