#!/usr/bin/env bash
# PVDM's two stages on moving digits under a wall-clock budget, then the measurements:
# autoencoder reconstruction PSNR/SSIM/LPIPS on held-out clips, FVD of generated 16-frame
# (two-clip) videos, and a 64-frame long video. Writes WORKDIR/pvdm_digits_result.json.
#
#   bash benchmarks/studies/pvdm_digits.sh WORKDIR AE_SECONDS LDM_SECONDS [AE_FLAGS...] -- [LDM_FLAGS...]
#
# Stages resume from WORKDIR, so a budget can be spread over several calls: a stage given
# 0 seconds is not trained again (the autoencoder's evaluation is skipped with it), and the
# wall time of every call is summed in WORKDIR/{ae,ldm}_wall.txt. PVDM_TRAIN_ONLY=1 stops
# after training (no evaluation, no long video). PVDM_LDM_ARG adds config arguments to the
# latent stage only (e.g. 'digits=large').
set -euo pipefail
workdir=$1 ae_s=$2 ldm_s=$3
shift 3
ae_flags=() ldm_flags=()
while (($#)) && [[ $1 != -- ]]; do ae_flags+=("$1"); shift; done
(($#)) && shift
ldm_flags=("$@")
mkdir -p "$workdir"
ae="$workdir/ae" ldm="$workdir/ldm"
arg=${PVDM_CONFIG_ARG:-}  # e.g. 'runlocal' for a CPU smoke run of this script
ldm_arg=${PVDM_LDM_ARG:-}
ae_cfg="configs/pvdm_ae_digits.py${arg:+:$arg}"
ldm_cfg="configs/pvdm_ldm_digits.py:ae=$ae${arg:+,$arg}${ldm_arg:+,$ldm_arg}"
run_for() {  # stage seconds, then python args; SIGTERM makes the trainer checkpoint and exit 0
  local stage=$1 seconds=$2 start
  shift 2
  ((seconds > 0)) || return 0
  start=$(date +%s)
  timeout -s TERM "$seconds" python -m vdiff.main "$@" || [[ $? == 124 ]]
  echo $(( $(date +%s) - start )) >> "$workdir/${stage}_wall.txt"
}
total_wall() { awk '{s += $1} END {print s + 0}' "$workdir/$1_wall.txt" 2>/dev/null || echo 0; }
run_for ae "$ae_s" --config="$ae_cfg" --workdir="$ae" "${ae_flags[@]}"
if ((ae_s > 0)); then
  python -m vdiff.main --config="$ae_cfg" --workdir="$ae" --mode=eval "${ae_flags[@]}"
fi
run_for ldm "$ldm_s" --config="$ldm_cfg" --workdir="$ldm" "${ldm_flags[@]}"
[[ ${PVDM_TRAIN_ONLY:-} == 1 ]] && exit 0
ae_wall=$(total_wall ae) ldm_wall=$(total_wall ldm)
python -m vdiff.main --config="$ldm_cfg" --workdir="$ldm" --mode=eval "${ldm_flags[@]}"
t0=$(date +%s)
python -m vdiff.main --config="$ldm_cfg" --workdir="$ldm" --mode=sample --application=extend \
  --num_frames=64 --num_samples=8 --sampler=ddim --num_steps=100 \
  --output_dir="$workdir/long_video" "${ldm_flags[@]}"
long_wall=$(( $(date +%s) - t0 ))
python - "$workdir" "$ae_wall" "$ldm_wall" "$long_wall" <<'PY'
import datetime, json, sys

import jax

workdir, ae_wall, ldm_wall, long_wall = sys.argv[1], *map(int, sys.argv[2:])
last = lambda path: [json.loads(x) for x in open(path)][-1]  # noqa: E731
steps = lambda run: max(json.loads(x)["step"] for x in open(f"{workdir}/{run}/metrics.jsonl"))  # noqa: E731
out = {"benchmark": "pvdm_digits", "date": datetime.date.today().isoformat(),
       "device": jax.devices()[0].device_kind,
       "autoencoder": {"steps": steps("ae"), "wall_s": ae_wall,
                       "eval": last(f"{workdir}/ae/eval.jsonl"),
                       "last_train_metrics": last(f"{workdir}/ae/metrics.jsonl")},
       "latent_diffusion": {"steps": steps("ldm"), "wall_s": ldm_wall,
                            "eval": last(f"{workdir}/ldm/eval.jsonl"),
                            "last_train_metrics": last(f"{workdir}/ldm/metrics.jsonl")},
       "long_video": {"frames": 64, "videos": 8, "sampler": "ddim", "steps_per_clip": 100,
                      "wall_s_including_startup": long_wall}}
json.dump(out, open(f"{workdir}/pvdm_digits_result.json", "w"), indent=2)
print(json.dumps(out, indent=2))
PY
