#!/usr/bin/env bash
# PVDM's class-conditional latent model (configs/pvdm_ldm_digits.py:classes=True) on a
# trained autoencoder: train for SECONDS without evaluators (resumes WORKDIR), then
# `--mode=eval` at each guidance weight in GUIDANCE (default "2 0"): digit accuracy of
# samples asked for one digit alone, digit confidence against real frames, held-out loss
# (EVALS, default digit_score+heldout_loss); after the first weight, 64-frame long videos
# of every digit at that weight. Results
# (eval.jsonl, metrics, logs, gifs) are copied to $OUT after each stage when it is set.
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
copy() {
  [[ -n ${OUT:-} ]] || return 0
  cp "$workdir"/eval.jsonl "$OUT/pvdm_classes_eval.jsonl" 2>/dev/null
  cp "$workdir"/metrics.jsonl "$OUT/pvdm_classes_metrics.jsonl" 2>/dev/null
  tail -n 40 "$workdir/log.txt" > "$OUT/pvdm_classes.log.tail"
  for f in "$workdir"/long_video/*; do [[ -f $f ]] && cp "$f" "$OUT/pvdm_long__$(basename "$f")"; done
}
timeout -s TERM -k 30 "$seconds" python -m vdiff.main --config="$cfg,evals=none" \
  --workdir="$workdir" "${flags[@]}" >> "$workdir/log.txt" 2>&1
copy
for w in $GUIDANCE; do
  timeout -s TERM -k 10 150 python -m vdiff.main --config="$ecfg" --workdir="$workdir" \
    --mode=eval "${flags[@]}" --config.evals.digit_score.guidance_scale="$w" \
    >> "$workdir/log.txt" 2>&1
  copy
  [[ $w == "${GUIDANCE%% *}" ]] || continue
  # after the first weight: the long videos (the other weights may hit a call's time limit)
  timeout -s TERM -k 10 120 python -m vdiff.main --config="$ecfg" --workdir="$workdir" \
    --mode=sample --application=extend --num_frames=64 --num_samples=10 --sampler=ddim \
    --num_steps=${LONG_STEPS:-100} --guidance_scale="$w" --output_dir="$workdir/long_video" "${flags[@]}" \
    >> "$workdir/log.txt" 2>&1
  copy
done
