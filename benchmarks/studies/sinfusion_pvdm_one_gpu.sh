#!/usr/bin/env bash
# SinFusion and PVDM GPU runs side by side on one GPU,
# resumable over device calls of at most SECONDS each (a warm machine keeps WORKDIR):
#   - SinFusion: residual x0 Predictors on carphone frames 0-79; frames 80-95 held out for
#     validation (and the shrinkage alpha), 96-119 held out as the test; the posterior mean
#     scored every 500 steps. Three variants: depth 4, depth 4 on 50 % crops, depth 2.
#   - PVDM: the memorisation test (benchmarks/studies/pvdm_memorisation.sh): one autoencoder for
#     AE_SECONDS in all, then the `default` and `large` latent models at once.
# Every call trains each unfinished run until SECONDS minus a margin (SIGTERM: the trainer
# checkpoints and exits), then copies every eval.jsonl / metrics.jsonl and the summaries to
# $OUT (when set). SINFUSION_EXTRA adds flags to every SinFusion variant (e.g.
# '--config.sinfusion.context_frames=2'), SINFUSION_FRAMES sets the trained frames (80);
# PVDM=0 skips the PVDM part.
# Run it from the repository root after `source benchmarks/device/device_env.sh`,
# with the carphone frames carried (WITH_CARPHONE=1 bash benchmarks/device/device_carry.sh).
#
#   bash benchmarks/studies/sinfusion_pvdm_one_gpu.sh WORKDIR SECONDS [AE_SECONDS]
set -uo pipefail
workdir=$1 seconds=$2 ae_total=${3:-300}
here=$(dirname "$0")
end=$(( $(date +%s) + seconds - 30 ))  # margin for the checkpoints and the copies
left() { echo $(( end - $(date +%s) )); }
# six processes share the GPU at most (3 SinFusion, 2 latent models, 1 for the GPU count)
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.13}
mkdir -p "$workdir"
video="${SINFUSION_VIDEO:-.gpu/carphone},frames=${SINFUSION_FRAMES:-80}"
sinfusion=(--config.diffusion.parameterization=x0 --config.sinfusion.residual=True
  --config.train.num_steps=12000 --config.train.lr_decay_every=3000
  --config.train.eval_every=500 --config.evals.sinfusion_next_frame.num_samples=0
  --config.evals.sinfusion_next_frame.validation_frames=16
  --config.evals.sinfusion_next_frame.max_pairs=24)
declare -A variants=(
  [d4]="--config.train.batch_size=4 --config.model.depth=4"
  [d4_crop50]="--config.train.batch_size=8 --config.model.depth=4 --config.data.crop_fraction=0.5"
  [d2]="--config.train.batch_size=4 --config.model.depth=2")
pids=()
for v in "${!variants[@]}"; do
  # shellcheck disable=SC2086  # the variant's flags are words
  SINFUSION_TRAIN_ONLY=1 bash "$here/sinfusion_next_frame.sh" "$video" "$workdir/sinfusion_$v" \
    "$(left)" 0 "${sinfusion[@]}" ${variants[$v]} ${SINFUSION_EXTRA:-} \
    >> "$workdir/sinfusion_$v.log" 2>&1 &
  pids+=($!)
done
[[ ${PVDM:-1} == 0 ]] || (
  set -e
  pvdm=$workdir/pvdm
  mkdir -p "$pvdm/shared"
  done_s=$(awk '{s += $1} END {print s + 0}' "$pvdm/shared/ae_wall.txt" 2>/dev/null || echo 0)
  ae_s=$(( ae_total - done_s ))
  (( ae_s < $(left) - 120 )) || ae_s=$(( $(left) - 120 ))
  if (( ae_s > 20 )); then
    PVDM_TRAIN_ONLY=1 bash "$here/pvdm_digits.sh" "$pvdm/shared" "$ae_s" 0 \
      --config.train.batch_size=32 --config.train.num_steps=6000
  fi
  (( $(left) > 60 )) || exit 0
  PVDM_PARALLEL=1 PVDM_LDM_ARG=fvd=False EVAL_EVERY=1000 \
    bash "$here/pvdm_memorisation.sh" "$pvdm" 0 "$(left)" \
    --config.train.batch_size=128 --config.train.lr=3e-4 --config.train.lr_schedule=cosine \
    --config.train.final_lr_fraction=0.05 --config.train.num_steps=12000 \
    --config.sample.num_samples=16
) >> "$workdir/pvdm.log" 2>&1 &
[[ ${PVDM:-1} == 0 ]] || pids+=($!)
for p in "${pids[@]}"; do wait "$p" || echo "a run exited with status $?" >&2; done
if [[ -n ${OUT:-} ]]; then
  # flat names (a/b/eval.jsonl → a__b__eval.jsonl): few folders come back from the device
  (cd "$workdir" && find . -path ./pvdm/shared/ae/checkpoints -prune -o \( -name 'eval.jsonl' \
     -o -name 'metrics.jsonl' -o -name '*wall*' -o -name '*result*.json' \) -print |
     while read -r f; do f=${f#./}; cp "$f" "$OUT/${f//\//__}"; done)
  for f in "$workdir"/*.log "$workdir"/pvdm/*.log; do
    [[ -f $f ]] && tail -n 40 "$f" > "$OUT/$(basename "$f").tail"
  done
fi
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null || true
