#!/usr/bin/env bash
# VDM on moving digits on one GPU, in device calls of at most 10 minutes: train for a
# wall-clock budget (resumable: run the same stage again to continue), evaluate, time.
#
#   bash benchmarks/studies/vdm_digits_gpu.sh WORKDIR CONFIG_ARG STAGE [SECONDS [FLAGS...]]
#     STAGE train  SECONDS of training (compile included), resumes from WORKDIR
#           eval   config.evals of the config (FVD, digit score, held-out loss, nearest
#                  training clip) on the latest EMA checkpoint → WORKDIR/eval.jsonl
#           protocol  the stated FVD16 protocol (2,048 samples vs 2,048 held-out clips) →
#                  WORKDIR/protocol_fvd16.json
#           speed  trainer-logged steps/s of WORKDIR against the isolated train step
#           samplers  FVD + digit accuracy per sampler and step count → WORKDIR/samplers.json
#           long   64-frame extensions, reconstruction guidance vs replacement → WORKDIR/long_videos.json
#           prepare   builds the `large` digits (the memorisation check's fresh clips) in
#                  the background, detached with setsid (it outlives a device call)
#
# FLAGS go to the eval, samplers and long stages' programs (e.g. config overrides).
# e.g. `bash benchmarks/studies/vdm_digits_gpu.sh workdirs/full32 full,res=32 train 500`.
# Logs and results are copied to $OUT (the device tool's folder) when it is set.
set -euo pipefail
PY=${PYTHON:-python3}
W=$1 ARG=$2 STAGE=$3 SECS=${4:-0}
CONFIG="configs/vdm_digits.py:$ARG"
OUT_DIR=${OUT:-$W}
mkdir -p "$W" "$OUT_DIR"
case "$STAGE" in
  train)
    $PY -m vdiff.main --config="$CONFIG" --workdir="$W" \
      --config.train.max_train_seconds="$SECS" --config.train.sample_every=0 \
      2>&1 | tee -a "$OUT_DIR/train.log" | grep -E "compiled|step [0-9]+0{3}/|stopped|Error|compute on"
    [[ "$OUT_DIR" == "$W" ]] || cp "$W/metrics.jsonl" "$OUT_DIR/" ;;
  prepare)
    setsid nohup $PY -m vdiff.data.prepare digits --digits_config=large \
      > "$W/prepare_large.log" 2>&1 < /dev/null & ;;
  eval)
    # the memorisation check's fresh clips come from `large`; until it is built, from the
    # held-out split (other digit images: a stricter reference, see NearestTrainEvaluator)
    fresh=()
    grep -q "dataset ready" "$W/prepare_large.log" 2>/dev/null || fresh=(
      --config.evals.nearest_train.fresh_builder_config=default
      --config.evals.nearest_train.fresh_split=test)
    $PY -m vdiff.main --mode=eval --config="$CONFIG" --workdir="$W" "${fresh[@]}" "${@:5}" 2>&1 |
      tee -a "$OUT_DIR/eval.log" | grep -E "evaluator|Error|^[{}]|\""
    [[ "$OUT_DIR" == "$W" ]] || cp "$W/eval.jsonl" "$OUT_DIR/" ;;
  protocol)
    $PY -m vdiff.main --mode=protocol --config="$CONFIG" --workdir="$W" "${@:5}" 2>&1 |
      tee -a "$OUT_DIR/protocol.log" | grep -vE "^ *$| I "
    [[ "$OUT_DIR" == "$W" ]] || cp "$W/protocol_fvd16.json" "$OUT_DIR/" ;;
  speed)
    $PY benchmarks/speed/trainer_vs_step.py --workdir_of "run=$W" --run "run=$CONFIG" \
      --out="$OUT_DIR/speed.json" 2>&1 | tail -n 3 ;;
  samplers)
    $PY benchmarks/studies/vdm_samplers_quality.py --config="$CONFIG" --workdir="$W" \
      --out="$OUT_DIR/samplers.json" "${@:5}" 2>&1 | tee -a "$OUT_DIR/samplers.log" | grep -v "^ *$" ;;
  long)
    $PY benchmarks/studies/vdm_long_videos.py --config="$CONFIG" --workdir="$W" \
      --out="$OUT_DIR/long_videos.json" "${@:5}" 2>&1 | tee -a "$OUT_DIR/long.log" | grep "^{" ;;
  *) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
