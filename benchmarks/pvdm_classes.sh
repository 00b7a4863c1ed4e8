#!/usr/bin/env bash
# PVDM's class-conditional latent model (configs/pvdm_ldm_digits.py:classes=True) on a
# trained autoencoder: train for SECONDS without evaluators (resumes WORKDIR), then
# `--mode=eval` at each guidance weight in GUIDANCE (default "2 0"): digit accuracy of
# samples asked for one digit alone, digit confidence against real frames, held-out loss
# (EVALS, default digit_score+heldout_loss), and 64-frame long videos of every digit at the
# first weight, all side by side (EVAL_SECONDS each, default 240). Results (metrics, logs,
# gifs) are archived into $OUT/pvdm_classes.tgz after each stage when OUT is set.
#
#   bash benchmarks/pvdm_classes.sh AE_WORKDIR WORKDIR SECONDS [FLAGS...]
set -uo pipefail
ae=$1 workdir=$2 seconds=$3
shift 3
cfg="configs/pvdm_ldm_digits.py:ae=$ae,fvd=False,classes=True${PVDM_LDM_ARG:+,$PVDM_LDM_ARG}"
ecfg="$cfg,evals=${EVALS:-digit_score+heldout_loss}"
GUIDANCE=${GUIDANCE:-2 0}
flags=(--config.train.batch_size=128 --config.train.lr=3e-4 --config.train.lr_schedule=cosine
       --config.train.final_lr_fraction=0.05 --config.train.num_steps=6000
       --config.train.sample_every=0 --config.sample.num_samples=20 "$@")
mkdir -p "$workdir"
copy() {  # one archive: the device tool brings back at most 8 files from $OUT
  [[ -n ${OUT:-} ]] || return 0
  (cd "$workdir" && tar czf "$OUT/pvdm_classes.tgz" --ignore-failed-read metrics.jsonl \
     eval.jsonl *.log $(find long_video -type f 2>/dev/null))
}
timeout -s TERM -k 30 "$seconds" python -m vdiff.main --config="$cfg,evals=none" \
  --workdir="$workdir" "${flags[@]}" >> "$workdir/train.log" 2>&1
copy
# The evaluations and the long video only read the checkpoint: run them side by side (one
# GPU holds them all; their compilations, the slow part, use separate CPU cores). Each
# writes its own log, whose last lines hold its results as JSON.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
first=${GUIDANCE%% *}
for w in $GUIDANCE; do
  timeout -s TERM -k 10 "${EVAL_SECONDS:-240}" python -m vdiff.main --config="$ecfg" \
    --workdir="$workdir" --mode=eval "${flags[@]}" \
    --config.evals.digit_score.guidance_scale="$w" > "$workdir/eval_w$w.log" 2>&1 &
done
timeout -s TERM -k 10 "${EVAL_SECONDS:-240}" python -m vdiff.main --config="$ecfg" \
  --workdir="$workdir" --mode=sample --application=extend --num_frames=64 --num_samples=10 \
  --sampler=ddim --num_steps="${LONG_STEPS:-100}" --guidance_scale="$first" \
  --output_dir="$workdir/long_video" "${flags[@]}" > "$workdir/long_video.log" 2>&1 &
wait
copy
