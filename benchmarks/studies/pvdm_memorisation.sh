#!/usr/bin/env bash
# Does PVDM's latent model on moving digits stop improving because it memorises its 2,000
# training videos? One autoencoder, then two latent models trained side by side under the
# same wall-clock budget: on the default 2,000 videos and on the `large` 15,000 (a superset,
# same test videos). Every `EVAL_EVERY` steps each logs digit confidence, FVD, the
# train/held-out loss gap and the nearest-training-clip ratio (eval.jsonl); the summary
# puts the two trajectories side by side in WORKDIR/pvdm_memorisation_result.json.
#
#   bash benchmarks/studies/pvdm_memorisation.sh WORKDIR AE_SECONDS LDM_SECONDS [LDM_FLAGS...]
#
# With two GPUs the latent models run one per GPU at once, otherwise one after the other;
# PVDM_PARALLEL=1 runs them at once on one GPU too (small models: give each process part of
# it, e.g. XLA_PYTHON_CLIENT_MEM_FRACTION=0.3). PVDM_LDM_ARG adds config arguments to both
# latent models (e.g. 'fvd=False'). Budgets add up over calls: each call trains both for
# LDM_SECONDS more, resuming from their checkpoints.
# An autoencoder already in WORKDIR/ae is reused when AE_SECONDS is 0. Memorisation shows
# as a growing heldout_loss_gap and nn_train_ratio falling below 1 on `default`, not on
# `large`; if `large` also keeps its digit confidence rising, memorisation was the limit.
# CPU smoke run: PVDM_CONFIG_ARG=runlocal bash benchmarks/studies/pvdm_memorisation.sh /tmp/m 20 20
set -euo pipefail
workdir=$1 ae_s=$2 ldm_s=$3
shift 3
eval_every=${EVAL_EVERY:-1000}
here=$(dirname "$0")
mkdir -p "$workdir"
if ((ae_s > 0)); then
  PVDM_TRAIN_ONLY=1 bash "$here/pvdm_digits.sh" "$workdir/shared" "$ae_s" 0
fi
[[ -d $workdir/shared/ae ]] || { echo "no autoencoder in $workdir/shared/ae: give AE_SECONDS > 0" >&2; exit 2; }
gpus=$(python -c 'import jax; print(sum(d.platform == "gpu" for d in jax.devices()))')
ldm() {  # digits-config workdir-name [gpu]
  local digits=$1 name=$2 gpu=${3:-}
  mkdir -p "$workdir/$name"
  ln -sfn "$(cd "$workdir/shared/ae" && pwd)" "$workdir/$name/ae"
  local env=(PVDM_TRAIN_ONLY=1 PVDM_LDM_ARG="digits=$digits${PVDM_LDM_ARG:+,$PVDM_LDM_ARG}")
  [[ -n $gpu ]] && env+=(CUDA_VISIBLE_DEVICES="$gpu")
  env "${env[@]}" bash "$here/pvdm_digits.sh" "$workdir/$name" 0 "$ldm_s" \
    -- --config.train.eval_every="$eval_every" "${@:4}" >> "$workdir/$name.log" 2>&1
}
if ((gpus >= 2)) || [[ ${PVDM_PARALLEL:-} == 1 ]]; then
  first=0 second=1
  ((gpus >= 2)) || first="" second=""
  ldm default default "$first" "$@" & a=$!
  ldm large large "$second" "$@" & b=$!
  wait $a; wait $b
else
  ldm default default "" "$@"
  ldm large large "" "$@"
fi
python - "$workdir" <<'PY'
import datetime, json, os, sys

import jax

workdir = sys.argv[1]
keys = ("step", "digit_confidence", "digit_confidence_real", "fvd", "heldout_loss_train",
        "heldout_loss_test", "heldout_loss_gap", "nn_train_rmse", "nn_train_rmse_fresh",
        "nn_train_ratio", "nn_train_close_fraction", "nn_train_videos")
out = {"benchmark": "pvdm_memorisation", "date": datetime.date.today().isoformat(),
       "device": jax.devices()[0].device_kind, "runs": {}}
for name in ("default", "large"):
    path = os.path.join(workdir, name, "ldm", "eval.jsonl")
    evals = [json.loads(x) for x in open(path)] if os.path.exists(path) else []
    wall = os.path.join(workdir, name, "ldm_wall.txt")
    out["runs"][name] = {
        "wall_s": sum(int(x) for x in open(wall)) if os.path.exists(wall) else None,
        "evals": [{k: e[k] for k in keys if k in e} for e in evals]}
json.dump(out, open(os.path.join(workdir, "pvdm_memorisation_result.json"), "w"), indent=2)
print(json.dumps(out, indent=2))
PY
