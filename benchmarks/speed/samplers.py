"""Seconds per 16×64×64 video and NFEs for each vdiff sampler, next to the PyTorch peer.

Ours: the VDM UNet from configs/vdm_ucf.py with 64 base channels (bf16, cuDNN spatial
attention), random weights (speed does not depend on them), batch of 8 videos.
Peer: `video-diffusion-pytorch` 0.7.0 `GaussianDiffusion(Unet3D(dim=64,
dim_mults=(1,2,4,8)))`, its 1000-step ancestral sampler, bf16 autocast, same batch,
in the same process. Prints JSON (device, date, per-sampler timings, ratios).

  python benchmarks/speed/samplers.py --out=results.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vdm_train_step import load_config  # noqa: E402

from vdiff.diffusion import samplers  # noqa: E402
from vdiff.methods import get_method  # noqa: E402
from vdiff.train.sharding import strip_boxes  # noqa: E402

SAMPLERS = [("ancestral", 1000, {}), ("ancestral", 256, {}), ("ddim", 100, {}),
            ("pc", 128, {"num_corrector_steps": 1}), ("dpmpp_2m", 20, {})]


def parse_samplers(spec: str) -> list:
    """'ancestral:256,dpmpp_2m:25' → [(name, steps, kwargs)]; '' → the default list."""
    if not spec:
        return SAMPLERS
    out = []
    for item in spec.split(","):
        name, steps = item.split(":")
        out.append((name, int(steps), {"num_corrector_steps": 1} if name == "pc" else {}))
    return out


def bench_ours(batch: int, sampler_list: list = SAMPLERS) -> dict:
    config = load_config("configs/vdm_ucf.py", "model.base_channels=64,"
                         "data.num_images_per_video=0,model.spatial_attention_impl=cudnn")
    method = get_method(config)
    params = strip_boxes(jax.jit(lambda r: method.init(r, method.example_batch(1)))(
        jax.random.key(0)))
    shape = (batch, 16, 64, 64, 3)
    out = {}
    for name, steps, kw in sampler_list:
        fn = jax.jit(lambda p, r, name=name, steps=steps, kw=kw: samplers.sample(
            sampler=name, denoise_fn=method.denoiser(p), rng=r, shape=shape,
            logsnr_schedule=method.schedule, num_steps=steps, clip_x0=True, **kw))
        t0 = time.perf_counter()
        jax.block_until_ready(fn(params, jax.random.key(1)))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(fn(params, jax.random.key(2)))
        run = time.perf_counter() - t0
        nfe = samplers.num_function_evals(name, steps, **kw)
        out[f"{name}_{steps}"] = {"nfe": nfe, "seconds_per_video": run / batch,
                                  "ms_per_nfe_per_batch": 1e3 * run / nfe,
                                  "compile_plus_first_run_s": first}
        print(json.dumps({f"ours_{name}_{steps}": out[f"{name}_{steps}"]}), flush=True)
    return out


def bench_peer(batch: int, timesteps: int = 1000) -> dict:
    import torch
    from video_diffusion_pytorch import GaussianDiffusion, Unet3D

    model = Unet3D(dim=64, dim_mults=(1, 2, 4, 8)).cuda()
    diffusion = GaussianDiffusion(model, image_size=64, num_frames=16,
                                  timesteps=timesteps).cuda()
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        diffusion.sample(batch_size=batch)  # warm-up (cuDNN autotune, allocator)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        diffusion.sample(batch_size=batch)
        torch.cuda.synchronize()
        run = time.perf_counter() - t0
    out = {"params_millions": params / 1e6, "nfe": timesteps,
           "seconds_per_video": run / batch, "ms_per_nfe_per_batch": 1e3 * run / timesteps}
    if timesteps != 1000:  # the peer's default sampler is 1000 steps of the same network call
        out["seconds_per_video_1000_steps_extrapolated"] = run / batch * 1000 / timesteps
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--peer_timesteps", type=int, default=1000,
                        help="fewer steps time the peer faster; its 1000-step seconds are then "
                             "extrapolated per network call (reported as such)")
    parser.add_argument("--samplers", default="",
                        help="NAME:STEPS,... (default: the five samplers above)")
    parser.add_argument("--no_peer", action="store_true", help="time our samplers only")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    result = {"benchmark": "samplers_16x64x64",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
              "jax": jax.__version__, "batch": args.batch}
    result["ours"] = bench_ours(args.batch, parse_samplers(args.samplers))
    if not args.no_peer:
        try:
            peer = bench_peer(args.batch, args.peer_timesteps)
            result["peer_video_diffusion_pytorch_0.7.0"] = peer
            peer_1000 = peer.get("seconds_per_video_1000_steps_extrapolated",
                                 peer["seconds_per_video"])
            result["speedup_vs_peer_1000_step_seconds_per_video"] = {
                k: peer_1000 / v["seconds_per_video"]
                for k, v in result["ours"].items()}
            result["speedup_vs_peer_per_nfe"] = {
                k: peer["ms_per_nfe_per_batch"] / v["ms_per_nfe_per_batch"]
                for k, v in result["ours"].items()}
        except Exception as e:  # noqa: BLE001 - report what failed, keep our numbers
            result["peer_error"] = f"{type(e).__name__}: {str(e)[:500]}"
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
