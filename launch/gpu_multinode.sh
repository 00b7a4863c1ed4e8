#!/usr/bin/env bash
# Multi-node GPU run without a scheduler: start this script once on every node, one process
# per node owning all of that node's GPUs. It only exports JAX's multi-process variables;
# python -m vdiff.main reads them and calls jax.distributed.initialize itself.
#
#   # on node 0 (10.0.0.1), and the same on node 1 with NODE_RANK=1:
#   COORDINATOR=10.0.0.1:1234 NUM_PROCESSES=2 NODE_RANK=0 GPUS_PER_NODE=8 \
#     launch/gpu_multinode.sh configs/vdm_ucf.py /shared/workdirs/ucf
#
# Run it from the repository root (CONFIG and WORKDIR are paths as seen from there);
# WORKDIR must be one directory shared by all nodes. --dry-run prints the exports and the
# command instead of running them. See launch/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/gpu_multinode.sh [--dry-run] CONFIG WORKDIR [FLAGS...]

environment:
  COORDINATOR      host:port of process 0, reachable from every node (required)
  NUM_PROCESSES    number of nodes = processes (required)
  PROCESS_ID       this node's rank in [0, NUM_PROCESSES), or NODE_RANK (required)
  GPUS_PER_NODE    GPUs this process owns (device ids 0..N-1; default: all visible GPUs)
  PYTHON           interpreter (default python3)
EOF
}

die() { echo "gpu_multinode.sh: $*" >&2; exit 2; }

DRY_RUN=${DRY_RUN:-0}
ARGS=()
for a in "$@"; do
  case $a in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) ARGS+=("$a") ;;
  esac
done
set -- "${ARGS[@]+"${ARGS[@]}"}"

source "$(dirname "${BASH_SOURCE[0]}")/quote.sh"  # q, qall
setenv() {  # setenv NAME VALUE: export it (dry run: print the export)
  if [[ $DRY_RUN == 1 ]]; then echo "export $1=$(q "$2")"; else export "$1=$2"; fi
}

[[ $# -ge 2 ]] || { usage >&2; die "CONFIG and WORKDIR are required"; }
CONFIG=$1 WORKDIR=$2
shift 2

[[ -n ${COORDINATOR:-} ]] || die "set COORDINATOR=host:port of process 0 (e.g. COORDINATOR=10.0.0.1:1234)"
[[ $COORDINATOR =~ ^[^:]+:[0-9]+$ ]] || die "COORDINATOR must be host:port, got $(q "$COORDINATOR")"
[[ -n ${NUM_PROCESSES:-} ]] || die "set NUM_PROCESSES (the number of nodes, e.g. NUM_PROCESSES=2)"
[[ $NUM_PROCESSES =~ ^[1-9][0-9]*$ ]] || die "NUM_PROCESSES must be a positive integer, got $(q "$NUM_PROCESSES")"
if [[ -n ${PROCESS_ID:-} && -n ${NODE_RANK:-} && $PROCESS_ID != "$NODE_RANK" ]]; then
  die "PROCESS_ID=$PROCESS_ID and NODE_RANK=$NODE_RANK disagree; set one"
fi
RANK=${PROCESS_ID:-${NODE_RANK:-}}
[[ -n $RANK ]] || die "set PROCESS_ID (or NODE_RANK), this node's rank in [0, $NUM_PROCESSES)"
if ! [[ $RANK =~ ^[0-9]+$ ]] || (( RANK >= NUM_PROCESSES )); then
  die "PROCESS_ID/NODE_RANK must be in [0, $NUM_PROCESSES), got $(q "$RANK")"
fi

setenv JAX_COORDINATOR_ADDRESS "$COORDINATOR"
setenv JAX_NUM_PROCESSES "$NUM_PROCESSES"
setenv JAX_PROCESS_ID "$RANK"
if [[ -n ${GPUS_PER_NODE:-} ]]; then
  [[ $GPUS_PER_NODE =~ ^[1-9][0-9]*$ ]] || die "GPUS_PER_NODE must be a positive integer, got $(q "$GPUS_PER_NODE")"
  setenv JAX_LOCAL_DEVICE_IDS "$(seq -s, 0 $((GPUS_PER_NODE - 1)))"
fi

CMD=("${PYTHON:-python3}" -m vdiff.main --config="$CONFIG" --workdir="$WORKDIR" "$@")
if [[ $DRY_RUN == 1 ]]; then
  qall "${CMD[@]}"
else
  exec "${CMD[@]}"
fi
