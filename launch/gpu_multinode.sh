#!/usr/bin/env bash
# Multi-node GPU launch: run this script once per node (e.g. from SLURM or by hand).
#
#   COORDINATOR=host0:1234 NUM_PROCESSES=2 PROCESS_ID=0 \
#     launch/gpu_multinode.sh configs/vdm_ucf.py /shared/workdir [extra flags...]
#
# Every node runs the same command; JAX's distributed runtime connects them through
# the coordinator, and the mesh in the config spans all GPUs of all nodes.
set -euo pipefail
CONFIG=${1:?usage: gpu_multinode.sh CONFIG WORKDIR [FLAGS...]}
WORKDIR=${2:?usage: gpu_multinode.sh CONFIG WORKDIR [FLAGS...]}
shift 2
: "${COORDINATOR:?set COORDINATOR=host:port of process 0}"
: "${NUM_PROCESSES:?set NUM_PROCESSES}"
: "${PROCESS_ID:?set PROCESS_ID (0..NUM_PROCESSES-1)}"
# SLURM sets these; jax.distributed.initialize() also reads SLURM's own variables.
export JAX_COORDINATOR_ADDRESS="$COORDINATOR"
export JAX_NUM_PROCESSES="$NUM_PROCESSES"
export JAX_PROCESS_ID="$PROCESS_ID"
exec python -m vdiff.main --config="$CONFIG" --workdir="$WORKDIR" --multiprocess "$@"
