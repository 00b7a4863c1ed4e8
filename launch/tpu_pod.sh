#!/usr/bin/env bash
# Cloud TPU pod slice launch: installs vdiff on every worker and starts the same run on all.
#
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a launch/tpu_pod.sh configs/vdm_ucf.py gs://bucket/workdir
#
# jax.distributed.initialize() discovers the pod topology by itself on TPU VMs.
set -euo pipefail
CONFIG=${1:?usage: tpu_pod.sh CONFIG WORKDIR [FLAGS...]}
WORKDIR=${2:?usage: tpu_pod.sh CONFIG WORKDIR [FLAGS...]}
shift 2
: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE}"
REPO_URL=${REPO_URL:-$(git config --get remote.origin.url)}
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e
  [ -d vdiff ] || git clone $REPO_URL vdiff
  cd vdiff && git pull --ff-only
  python3 -m pip install -q -e '.[tpu]'
  python3 -m vdiff.main --config=$CONFIG --workdir=$WORKDIR --multiprocess $*
"
