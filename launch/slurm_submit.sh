#!/usr/bin/env bash
# Submit launch/slurm.sbatch: checks the arguments, then runs (or with --dry-run prints)
#
#   sbatch [--nodes=N --gpus-per-node=G ...] --export=ALL,... launch/slurm.sbatch CONFIG WORKDIR [FLAGS...]
#
#   launch/slurm_submit.sh configs/vdm_ucf.py /shared/workdirs/ucf --nodes 4 --partition gpu
#   launch/slurm_submit.sh configs/vdm_ucf.py /shared/workdirs/ucf --nodes 4 --dry-run
#
# Options not given fall back to the #SBATCH lines of launch/slurm.sbatch (2 nodes, 8 GPUs
# each, 24 h). Anything else after CONFIG WORKDIR goes to python -m vdiff.main. Submitting
# the same command again resumes the run from its last checkpoint. See launch/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/slurm_submit.sh CONFIG WORKDIR [OPTIONS] [FLAGS...]

options (anywhere on the command line; --opt VALUE or --opt=VALUE):
  --nodes N              nodes = processes (one task per node, all its GPUs)
  --gpus-per-node G      GPUs per node (also exported as GPUS_PER_NODE)
  --time T               time limit, e.g. 12:00:00
  --partition P          SLURM partition        (or $SLURM_PARTITION)
  --account A            SLURM account          (or $SLURM_ACCOUNT)
  --job-name NAME        job name (default: vdiff-<basename of WORKDIR>)
  --cpus-per-task C      CPU cores per node's task (input pipeline workers)
  --env NAME=VALUE       export NAME=VALUE to the job (repeatable; no commas in VALUE)
  --dry-run              print the sbatch command instead of running it
FLAGS: passed to python -m vdiff.main (e.g. --config.train.batch_size=256)
EOF
}

die() { echo "slurm_submit.sh: $*" >&2; exit 2; }

source "$(dirname "${BASH_SOURCE[0]}")/quote.sh"  # q, qall

DRY_RUN=${DRY_RUN:-0}
NODES="" GPUS="" TIME="" PARTITION=${SLURM_PARTITION:-} ACCOUNT=${SLURM_ACCOUNT:-} JOB_NAME=""
CPUS=""
EXPORTS=()
POSITIONAL=()
while [[ $# -gt 0 ]]; do
  opt=$1
  case $opt in
    --dry-run) DRY_RUN=1; shift; continue ;;
    -h|--help) usage; exit 0 ;;
    --nodes|--gpus-per-node|--time|--partition|--account|--job-name|--cpus-per-task|--env)
      [[ $# -ge 2 ]] || die "$opt needs a value"
      value=$2; shift 2 ;;
    --nodes=*|--gpus-per-node=*|--time=*|--partition=*|--account=*|--job-name=*|--cpus-per-task=*|--env=*)
      value=${opt#*=}; opt=${opt%%=*}; shift ;;
    *) POSITIONAL+=("$opt"); shift; continue ;;
  esac
  case $opt in
    --nodes) [[ $value =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got $(q "$value")"
             NODES=$value ;;
    --gpus-per-node) [[ $value =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node must be a positive integer, got $(q "$value")"
             GPUS=$value ;;
    --time) TIME=$value ;;
    --partition) PARTITION=$value ;;
    --account) ACCOUNT=$value ;;
    --job-name) JOB_NAME=$value ;;
    --cpus-per-task) CPUS=$value ;;
    --env) [[ $value =~ ^[A-Za-z_][A-Za-z0-9_]*=[^,]*$ ]] \
             || die "--env needs NAME=VALUE without commas, got $(q "$value")"
           EXPORTS+=("$value") ;;
  esac
done
[[ ${#POSITIONAL[@]} -ge 2 ]] || { usage >&2; die "CONFIG and WORKDIR are required"; }
CONFIG=${POSITIONAL[0]} WORKDIR=${POSITIONAL[1]}
FLAGS=("${POSITIONAL[@]:2}")
[[ $CONFIG != -* && $WORKDIR != -* ]] || die "CONFIG and WORKDIR come first, got $(q "$CONFIG") $(q "$WORKDIR")"
[[ $DRY_RUN == 1 || -e ${CONFIG%%:*} ]] || die "no config file ${CONFIG%%:*} (run from the repository root)"

LAUNCH_DIR=$(dirname "${BASH_SOURCE[0]}")
JOB_NAME=${JOB_NAME:-vdiff-$(basename "$WORKDIR" | tr -c 'A-Za-z0-9_.\n-' '_')}
export_list=ALL
[[ -n $GPUS ]] && export_list+=",GPUS_PER_NODE=$GPUS"
for kv in "${EXPORTS[@]+"${EXPORTS[@]}"}"; do export_list+=",$kv"; done

CMD=(sbatch --job-name="$JOB_NAME")
[[ -n $NODES ]] && CMD+=(--nodes="$NODES")
CMD+=(--ntasks-per-node=1)
[[ -n $GPUS ]] && CMD+=(--gpus-per-node="$GPUS")
[[ -n $CPUS ]] && CMD+=(--cpus-per-task="$CPUS")
[[ -n $TIME ]] && CMD+=(--time="$TIME")
[[ -n $PARTITION ]] && CMD+=(--partition="$PARTITION")
[[ -n $ACCOUNT ]] && CMD+=(--account="$ACCOUNT")
CMD+=(--export="$export_list" "$LAUNCH_DIR/slurm.sbatch" "$CONFIG" "$WORKDIR" "${FLAGS[@]+"${FLAGS[@]}"}")

if [[ $DRY_RUN == 1 ]]; then
  qall "${CMD[@]}"
else
  command -v sbatch > /dev/null || die "sbatch not found: run this on a SLURM login node"
  "${CMD[@]}"
fi
