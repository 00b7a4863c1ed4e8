#!/usr/bin/env bash
# PVDM's class-conditional latent model (configs/pvdm_ldm_digits.py:classes=True) on a
# trained autoencoder: train for SECONDS without evaluators (resumes WORKDIR), then
# `--mode=eval` at each guidance weight in GUIDANCE (default "2 0"): digit accuracy of
# samples asked for one digit alone, digit confidence against real frames, held-out loss
# (EVALS, default digit_score+heldout_loss), and 64-frame long videos of every digit at the
# first weight, all side by side (EVAL_SECONDS each, default 240). Results (metrics, logs,
# gifs) are archived into $OUT/pvdm_classes_<WORKDIR's name>.tgz after each stage, and every
# 20 s during the evaluations, when OUT is set.
#
#   bash benchmarks/studies/pvdm_classes.sh AE_WORKDIR WORKDIR SECONDS [FLAGS...]
#
# AE_SECONDS=N first trains the autoencoder in AE_WORKDIR for N seconds (batch 32), so one
# device call holds the whole run; DIGITS=static uses the digits at rest for both stages
# (default: moving); PVDM_AE_ARG / PVDM_LDM_ARG append config arguments to the autoencoder /
# latent config (e.g. PVDM_AE_ARG=patch=2); EXPORT_AE=1 also writes the trained autoencoder
# (EMA weights + config, `python -m vdiff.methods.pvdm`) to $OUT/ae_<WORKDIR's name>, which a
# later call can carry and pass as AE_WORKDIR with AE_SECONDS=0; DIAGNOSE=1 also runs `benchmarks/studies/pvdm_diagnose.py --fvd=0 --samplers=`
# beside the evaluations (class_info: where the class information is lost). Two runs can
# share one GPU: give them different WORKDIRs and export XLA_PYTHON_CLIENT_PREALLOCATE=false.
set -uo pipefail
ae=$1 workdir=$2 seconds=$3
shift 3
digits=${DIGITS:-default}
cfg="configs/pvdm_ldm_digits.py:ae=$ae,fvd=False,classes=True,digits=$digits${PVDM_LDM_ARG:+,$PVDM_LDM_ARG}"
ecfg="$cfg,evals=${EVALS:-digit_score+heldout_loss}"
GUIDANCE=${GUIDANCE:-2 0}
flags=(--config.train.batch_size=128 --config.train.lr=3e-4 --config.train.lr_schedule=cosine
       --config.train.final_lr_fraction=0.05 --config.train.num_steps=6000
       --config.train.sample_every=0 --config.sample.num_samples=20 "$@")
mkdir -p "$workdir"
copy() {  # one archive: the device tool brings back at most 8 files from $OUT
  [[ -n ${OUT:-} ]] || return 0
  local archive="$OUT/pvdm_classes_$(basename "$workdir").tgz" part
  part="$archive.part.$BASHPID"
  # Written beside and renamed, so a copy cut off by an outer timeout leaves the last one whole
  (cd "$workdir" && tar czf "$part" \
     --ignore-failed-read metrics.jsonl eval.jsonl *.log *.json \
     $(find long_video -type f 2>/dev/null) 2>/dev/null)
  mv -f "$part" "$archive" 2>/dev/null
  return 0
}
# Build the dataset before any timer starts (the `static` and `large` configs take ~30–60 s)
python -m vdiff.data.prepare digits --digits_config="$digits" > "$workdir/prepare.log" 2>&1
if (( ${AE_SECONDS:-0} > 0 )); then  # SIGTERM: the trainer checkpoints and exits 0
  timeout -s TERM -k 30 "$AE_SECONDS" python -m vdiff.main \
    --config="configs/pvdm_ae_digits.py:digits=$digits${PVDM_AE_ARG:+,$PVDM_AE_ARG}" --workdir="$ae" \
    --config.train.batch_size=32 > "$workdir/autoencoder.log" 2>&1
  copy
  if [[ ${EXPORT_AE:-0} == 1 && -n ${OUT:-} ]]; then  # ~11 MB: comes back, carries forward
    python -m vdiff.methods.pvdm "$ae" "$OUT/ae_$(basename "$workdir")" \
      >> "$workdir/autoencoder.log" 2>&1
  fi
fi
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
if [[ ${DIAGNOSE:-0} == 1 ]]; then
  timeout -s TERM -k 10 "${EVAL_SECONDS:-240}" python benchmarks/studies/pvdm_diagnose.py \
    --ldm_workdir="$workdir" --fvd=0 --samplers= --out="$workdir/diagnose.json" \
    > "$workdir/diagnose.log" 2>&1 &
fi
# Archive every 20 s while they run: an outer timeout then keeps what has finished
( while sleep 20; do copy; done ) &
archiver=$!
for pid in $(jobs -p); do [[ $pid == "$archiver" ]] || wait "$pid"; done
kill "$archiver" 2>/dev/null; wait "$archiver" 2>/dev/null
copy
