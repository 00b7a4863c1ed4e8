#!/usr/bin/env bash
# Class-conditional PVDM variants side by side on one GPU, each with its own autoencoder:
# every VARIANT (NAME:DIGITS:AE_ARG:LDM_ARG; empty fields take the defaults) runs
# `pvdm_classes.sh` with AE_SECONDS of autoencoder training, SECONDS of latent training, then
# its evaluations, long videos and diagnosis (DIAGNOSE=1), EVAL_SECONDS each. Archives land
# in $OUT (or RESULTS, default ROOT/results) as pvdm_classes_ldm_NAME.tgz after every stage.
#
#   bash benchmarks/studies/pvdm_variants.sh ROOT AE_SECONDS SECONDS VARIANT... [-- FLAGS for all]
#   bash benchmarks/studies/pvdm_variants.sh w 330 480 moving:: static:static:: p2::patch=2:
#
# A run longer than one device call: start it with `setsid` and RESULTS= a fixed folder,
# then copy RESULTS into $OUT at the end of each call.
set -uo pipefail
root=$1 ae_seconds=$2 seconds=$3
shift 3
variants=()
while (( $# )) && [[ $1 != -- ]]; do variants+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
export XLA_PYTHON_CLIENT_PREALLOCATE=false OUT=${RESULTS:-${OUT:-$root/results}}
mkdir -p "$root" "$OUT"
# Each digits config once, before the runs: two builds of one dataset at once would race
for d in $(for spec in "${variants[@]}"; do IFS=: read -r _ digits _ <<< "$spec"
           echo "${digits:-default}"; done | sort -u); do
  python -m vdiff.data.prepare digits --digits_config="$d" > "$root/prepare_$d.log" 2>&1 &
done
wait
for spec in "${variants[@]}"; do
  IFS=: read -r name digits ae_arg ldm_arg <<< "$spec"
  AE_SECONDS=$ae_seconds DIGITS=${digits:-default} DIAGNOSE=1 PVDM_AE_ARG=$ae_arg \
    PVDM_LDM_ARG=$ldm_arg bash "$(dirname "$0")/pvdm_classes.sh" "$root/ae_$name" \
    "$root/ldm_$name" "$seconds" "$@" &
done
wait
echo "pvdm_variants: done" > "$OUT/done.txt"
