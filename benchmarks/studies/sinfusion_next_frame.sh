#!/usr/bin/env bash
# SinFusion on one real video under a wall-clock budget: train the Predictor and the
# Projector for a fixed number of seconds each (SIGTERM → the trainer checkpoints and
# exits), then `--mode=eval`: next-frame PSNR on held-out frames vs copy-last-frame, and
# NNFDIV / NNFDIST of generated videos. Writes WORKDIR/sinfusion_result.json. Training
# resumes from WORKDIR, so a budget can be spread over calls; a role given 0 seconds is
# not trained in this call. SINFUSION_TRAIN_ONLY=1 stops before the evaluation.
#
#   bash benchmarks/studies/sinfusion_next_frame.sh VIDEO WORKDIR PRED_SECONDS PROJ_SECONDS [FLAGS...]
#
# VIDEO is a path or a clip named in configs/sinfusion_video.py: `bikes` trains and
# evaluates on bikes.mp4's longest shot (frames 76-136), with validation and test frames.
set -euo pipefail
video=$1 workdir=$2 pred_s=$3 proj_s=$4
shift 4
config="configs/sinfusion_video.py:video=${video}"
common=(--config.sinfusion.curriculum_stage_steps=2000 --config.train.log_every=500
        --config.train.checkpoint_every=2000 --config.train.sample_every=0 "$@")
for role in predictor projector; do
  seconds=$pred_s
  [[ $role == projector ]] && seconds=$proj_s
  ((seconds > 0)) || continue
  start=$(date +%s)
  # timeout sends SIGTERM: the trainer saves a checkpoint and exits 0.
  timeout -s TERM "$seconds" python -m vdiff.main --config="${config},role=${role}" \
    --workdir="$workdir" "${common[@]}" || [[ $? == 124 ]]
  echo "{\"role\": \"$role\", \"seconds\": $(( $(date +%s) - start ))}" >> "$workdir/wall.jsonl"
done
[[ ${SINFUSION_TRAIN_ONLY:-} == 1 ]] && exit 0
python -m vdiff.main --config="${config}" --workdir="$workdir" --mode=eval "${common[@]}"
python - "$workdir" <<'EOF'
import datetime, json, sys

import jax

workdir = sys.argv[1]
evals = [json.loads(x) for x in open(f"{workdir}/eval.jsonl")]
wall = [json.loads(x) for x in open(f"{workdir}/wall.jsonl")]
steps = {}
for role in ("predictor", "projector"):
    lines = [json.loads(x) for x in open(f"{workdir}/{role}/metrics.jsonl")]
    steps[role] = max(x["step"] for x in lines)
out = {"benchmark": "sinfusion_next_frame", "date": datetime.date.today().isoformat(),
       "device": jax.devices()[0].device_kind, "train_steps": steps, "train_wall": wall,
       "eval": evals[-1]}
json.dump(out, open(f"{workdir}/sinfusion_result.json", "w"), indent=2)
print(json.dumps(out, indent=2))
EOF
