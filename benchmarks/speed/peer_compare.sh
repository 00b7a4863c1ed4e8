#!/usr/bin/env bash
# The peer (video-diffusion-pytorch 0.7.0) and our VDM UNet timed
# in the same run on the GPU machine, merged into one JSON with videos/s ratios.
#
#   bash benchmarks/speed/peer_compare.sh $OUT/peer_compare.json     # needs .gpu/peer/*.whl carried
#
# Pairing (FLOP-matched, see the peer benchmark's docstring): peer Unet3D(dim=88,
# dim_mults=1/2/4/8; 1.28 TFLOP/video train) vs our configs/vdm_ucf.py at base_channels=64
# (1.34), both 16x64x64x3, batch 8 and 32, bf16.
# Our side expects jax/flax/vdiff deps importable (e.g. PYTHONPATH set by the caller).
# Budget: ~6 min of wall time (3 warmup + 10 timed steps each; compile dominates).
# Env: PEER_JSON / OURS_JSON to reuse existing results (merge-only), QUICK=1 for a CPU test.
set -u
MERGED=${1:?usage: peer_compare.sh OUT.json}
DIR=$(dirname "$MERGED"); mkdir -p "$DIR"
PEER_JSON=${PEER_JSON:-}; OURS_JSON=${OURS_JSON:-}

if [ -z "$PEER_JSON" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/peer .gpu/peer/*.whl
  PEER_JSON=$DIR/peer.json
  PYTHONPATH=/tmp/peer:${PYTHONPATH:-} timeout 330 \
    python3 benchmarks/speed/peer_video_diffusion_pytorch.py \
    ${QUICK:+--quick} --warmup 3 --steps 10 --out "$PEER_JSON" > "$DIR/peer.log" 2>&1
  echo "peer rc=$?"; tail -3 "$DIR/peer.log"
fi
if [ -z "$OURS_JSON" ]; then
  OURS_JSON=$DIR/ours.json
  V=configs/vdm_ucf.py:model.base_channels=64,data.num_images_per_video=0,model.spatial_attention_impl=cudnn
  # the third variant: temporal attention in place, without the (b h w) f c transposes
  timeout 300 python3 benchmarks/speed/vdm_train_step.py --warmup 3 --steps 10 --out "$OURS_JSON" \
    --variant="dim64_b8:$V,train.batch_size=8" --variant="dim64_b32:$V,train.batch_size=32" \
    --variant="dim64_b32_einsum:$V,train.batch_size=32,model.temporal_attention_impl=einsum" \
    > "$DIR/ours.log" 2>&1
  echo "ours rc=$?"; tail -3 "$DIR/ours.log"
fi

python3 - "$PEER_JSON" "$OURS_JSON" "$MERGED" <<'EOF'
"""Merges the two JSONs; per our variant, ours/peer videos/s at equal batch size (>1: ours faster)."""
import json, sys
peer, ours = (json.load(open(p)) for p in sys.argv[1:3])
ratios = {}
for name, o in ours.get("variants", {}).items():
    b = o.get("batch_size")
    if "videos_per_s" not in o:
        continue
    r = {"ours_videos_per_s": o["videos_per_s"]}
    for mode in ("train_compiled", "train_eager"):
        p = peer.get("runs", {}).get(f"{mode}_b{b}", {})
        if "videos_per_s" in p:
            r[f"peer_{mode}_videos_per_s"] = p["videos_per_s"]
            r[f"ours_over_peer_{mode.removeprefix('train_')}"] = o["videos_per_s"] / p["videos_per_s"]
    ratios[name] = r
# single-device runs: per-device FLOPs are the step's FLOPs
o_fl = next((v.get("model_flops_per_step", v.get("xla_flops_per_step_per_device")) / v["batch_size"]
             for v in ours.get("variants", {}).values()
             if v.get("model_flops_per_step") or v.get("xla_flops_per_step_per_device")), None)
summary = {
    "ours_params_millions": next((v["params_millions"] for v in ours.get("variants", {}).values()
                                  if "params_millions" in v), None),
    "peer_params_millions": peer.get("params_millions"),
    # ours: XLA cost analysis of the whole train step (incl. optimizer); peer: FlopCounterMode
    # of loss forward+backward (matmul/conv/SDPA only). Same order, not the same counter.
    "ours_train_flops_per_video": o_fl,
    "peer_train_flops_per_video": peer.get("train_flops_per_video"),
    "peer_denoiser_fwd_flops_per_video": peer.get("denoiser_fwd_flops_per_video"),
}
out = {"benchmark": "peer_compare", "summary": summary, "ratios": ratios, "peer": peer, "ours": ours}
json.dump(out, open(sys.argv[3], "w"), indent=2)
print(json.dumps({"summary": summary, "ratios": ratios}, indent=2))
EOF
