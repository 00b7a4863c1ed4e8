#!/usr/bin/env bash
# vdiff on a Cloud TPU VM or pod slice: create it, install vdiff on every worker, start the
# same run on all workers, fetch the logs, delete it. Shell only: the multi-process setup is
# vdiff's (python -m vdiff.main detects a pod slice and calls jax.distributed.initialize).
#
#   export PROJECT=my-project ZONE=us-central2-b TPU_NAME=vdiff-v4-32
#   export ACCELERATOR_TYPE=v4-32 RUNTIME_VERSION=tpu-ubuntu2204-base
#   launch/tpu_pod.sh create                 # or: QUEUED=1 launch/tpu_pod.sh create
#   launch/tpu_pod.sh setup                  # this checkout → every worker, pip install -e '.[tpu]'
#   launch/tpu_pod.sh run configs/vdm_ucf.py /mnt/shared/ucf [--config.KEY=VALUE ...]
#   launch/tpu_pod.sh logs                   # every worker's log → ./tpu_logs/$TPU_NAME/
#   launch/tpu_pod.sh delete
#
# --dry-run (anywhere on the command line) prints each command, one per line and shell-quoted,
# instead of running it. See launch/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/tpu_pod.sh [--dry-run] COMMAND [ARGS...]

commands:
  create                         create the TPU VM (QUEUED=1: through a queued resource)
  status                         describe the TPU VM (or the queued resource)
  setup                          copy this checkout to every worker (REPO_URL set: git clone
                                 it there instead) and pip install -e '.[tpu]'
  run [--env=NAME=VALUE ...] CONFIG WORKDIR [FLAGS...]
                                 start `python3 -m vdiff.main --config=CONFIG --workdir=WORKDIR
                                 --multiprocess FLAGS` on every worker in the background, one
                                 log per worker
  tail [N]                       last N (20) lines of every worker's log
  logs [DEST]                    copy every worker's log to DEST (./tpu_logs/$TPU_NAME)
  stop                           SIGTERM the run on every worker (it saves a checkpoint first)
  exec CMD...                    run CMD in the checkout on every worker (e.g. data preparation)
  delete                         delete the TPU VM (QUEUED=1: the queued resource and its VM)

environment:
  TPU_NAME, ZONE, PROJECT        always required
  ACCELERATOR_TYPE               create: e.g. v4-32, v5p-64, v5litepod-16
  RUNTIME_VERSION                create: the TPU VM image, e.g. tpu-ubuntu2204-base
  QUEUED=1                       create/status/delete through `gcloud compute tpus
                                 queued-resources` (QUEUED_RESOURCE_ID, default $TPU_NAME)
  SPOT=1                         create a Spot TPU (preemptible; rerun `run` to resume)
  REPO_URL, GIT_REF              setup: clone this URL (at GIT_REF) instead of copying
  REMOTE_DIR (vdiff), LOG_DIR (vdiff_logs)   paths on the workers, relative to $HOME
  PYTHON (python3)               the workers' Python
EOF
}

die() { echo "tpu_pod.sh: $*" >&2; exit 2; }

DRY_RUN=${DRY_RUN:-0}
ARGS=()
for a in "$@"; do
  if [[ $a == --dry-run ]]; then DRY_RUN=1; else ARGS+=("$a"); fi
done
set -- "${ARGS[@]+"${ARGS[@]}"}"

source "$(dirname "${BASH_SOURCE[0]}")/quote.sh"  # q, qall
run() { if [[ $DRY_RUN == 1 ]]; then qall "$@"; else "$@"; fi; }

need() {  # need VAR "what it is": exit with a message naming VAR when it is unset or empty
  [[ -n ${!1:-} ]] || die "set $1 ($2), e.g. export $1=$3"
}

CMD=${1:-}
[[ -n $CMD ]] || { usage >&2; exit 2; }
shift
case $CMD in -h|--help|help) usage; exit 0 ;; esac

need TPU_NAME "the TPU VM's name" vdiff-v4-32
need ZONE "the TPU's zone" us-central2-b
need PROJECT "the Google Cloud project" my-project
REMOTE_DIR=${REMOTE_DIR:-vdiff}
LOG_DIR=${LOG_DIR:-vdiff_logs}
PYTHON=${PYTHON:-python3}
QUEUED=${QUEUED:-0}
QUEUED_RESOURCE_ID=${QUEUED_RESOURCE_ID:-$TPU_NAME}
WHERE=(--zone="$ZONE" --project="$PROJECT")
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

on_all_workers() {  # on_all_workers 'remote shell command'
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${WHERE[@]}" --worker=all --command="$1"
}

case $CMD in
  create|status|setup|stop|delete)
    [[ $# -eq 0 ]] || die "$CMD takes no arguments (got $(qall "$@")); settings come from the environment" ;;
esac

case $CMD in
  create)
    need ACCELERATOR_TYPE "the TPU type" v4-32
    need RUNTIME_VERSION "the TPU VM runtime image" tpu-ubuntu2204-base
    spot=(); [[ ${SPOT:-0} == 1 ]] && spot=(--spot)
    if [[ $QUEUED == 1 ]]; then
      run gcloud compute tpus queued-resources create "$QUEUED_RESOURCE_ID" "${WHERE[@]}" \
        --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
        --runtime-version="$RUNTIME_VERSION" "${spot[@]+"${spot[@]}"}"
      [[ $DRY_RUN == 1 ]] || echo "queued; wait for state ACTIVE: launch/tpu_pod.sh status" >&2
    else
      run gcloud compute tpus tpu-vm create "$TPU_NAME" "${WHERE[@]}" \
        --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" \
        "${spot[@]+"${spot[@]}"}"
    fi
    ;;
  status)
    if [[ $QUEUED == 1 ]]; then
      run gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE_ID" "${WHERE[@]}"
    else
      run gcloud compute tpus tpu-vm describe "$TPU_NAME" "${WHERE[@]}"
    fi
    ;;
  setup)
    if [[ -n ${REPO_URL:-} ]]; then
      dir=$(q "$REMOTE_DIR")
      update="git -C $dir pull -q --ff-only"
      [[ -n ${GIT_REF:-} ]] && update="git -C $dir checkout -q $(q "$GIT_REF") && { git -C $dir pull -q --ff-only 2>/dev/null || true; }"
      on_all_workers "{ [ -d $dir/.git ] && git -C $dir fetch -q || git clone -q $(q "$REPO_URL") $dir; } && $update"
    else
      # Tracked and untracked-but-not-ignored files of this checkout (no .venv, no workdirs),
      # staged in a temporary folder that `scp --recurse` copies to every worker.
      if [[ $DRY_RUN == 1 ]]; then
        stage=${TMPDIR:-/tmp}/vdiff_stage.$$
      else
        stage=$(mktemp -d "${TMPDIR:-/tmp}/vdiff_stage.XXXXXX")
        trap 'rm -rf "$stage"' EXIT
      fi
      copy=$stage/$(basename "$REMOTE_DIR")
      run bash -c "cd $(q "$REPO_ROOT") && mkdir -p $(q "$copy") && git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - | tar -C $(q "$copy") -xf -"
      run gcloud compute tpus tpu-vm scp --recurse "$copy" "$TPU_NAME:$(dirname "$REMOTE_DIR")" \
        "${WHERE[@]}" --worker=all
    fi
    on_all_workers "cd $(q "$REMOTE_DIR") && $(q "$PYTHON") -m pip install -q -U pip && $(q "$PYTHON") -m pip install -q -e \".[tpu]\""
    ;;
  run)
    envs=()
    while [[ ${1:-} == --env=* ]]; do
      kv=${1#--env=}
      [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env needs NAME=VALUE, got $(q "$kv")"
      envs+=("$(q "$kv")")
      shift
    done
    [[ $# -ge 2 ]] || die "usage: launch/tpu_pod.sh run [--env=NAME=VALUE ...] CONFIG WORKDIR [FLAGS...]"
    config=$1 workdir=$2
    shift 2
    # --multiprocess: JAX's own Cloud TPU detection (worker list and rank from the TPU VM's
    # metadata server). vdiff's environment-only detection looks for TPU_WORKER_HOSTNAMES,
    # which GKE sets but a TPU VM reached over `gcloud ... ssh` may not have.
    main=("$PYTHON" -m vdiff.main --config="$config" --workdir="$workdir" --multiprocess "$@")
    prefix=""
    [[ ${#envs[@]} -gt 0 ]] && prefix="env ${envs[*]} "
    # One log per worker ($(hostname) ends in the worker number), appended across restarts;
    # the pid file lets `stop` signal exactly this process.
    on_all_workers "mkdir -p $(q "$LOG_DIR") && log=\$(cd $(q "$LOG_DIR") && pwd)/\$(hostname) && cd $(q "$REMOTE_DIR") && { ${prefix}nohup $(qall "${main[@]}") >> \"\$log.log\" 2>&1 < /dev/null & echo \$! > \"\$log.pid\"; } && echo \"started on \$(hostname): \$log.log\""
    ;;
  tail)
    on_all_workers "tail -n $(q "${1:-20}") $(q "$LOG_DIR")/\$(hostname).log"
    ;;
  logs)
    dest=${1:-tpu_logs/$TPU_NAME}
    run mkdir -p "$dest"
    run gcloud compute tpus tpu-vm scp --recurse "$TPU_NAME:$LOG_DIR" "$dest" "${WHERE[@]}" --worker=all
    ;;
  stop)
    on_all_workers "kill -TERM \$(cat $(q "$LOG_DIR")/\$(hostname).pid)"
    ;;
  exec)
    [[ $# -ge 1 ]] || die "usage: launch/tpu_pod.sh exec CMD [ARGS...]"
    on_all_workers "cd $(q "$REMOTE_DIR") && $(qall "$@")"
    ;;
  delete)
    if [[ $QUEUED == 1 ]]; then
      run gcloud compute tpus queued-resources delete "$QUEUED_RESOURCE_ID" "${WHERE[@]}" --force --quiet
    else
      run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${WHERE[@]}" --quiet
    fi
    ;;
  *)
    usage >&2
    die "unknown command $(q "$CMD")"
    ;;
esac
