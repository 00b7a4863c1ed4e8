"""PVDM's efficiency table on one GPU: PVDM (autoencoder + triplane UNet) vs the pixel-space
VDM UNet on 16×256×256 clips, each with the train step the trainer builds.

  python benchmarks/speed/pvdm_efficiency.py --out=pvdm_efficiency.json [--budget_gib=80]

For each train step (random weights and data; bf16 compute, float32 params):
- XLA's compile-time memory estimate (arguments + temporaries + outputs − aliased) at
  batch 1 and 2; memory is affine in the batch, so the largest batch under
  `--budget_gib` is extrapolated from those two and then *checked* by compiling and
  running one step at that batch (the result records whether it ran);
- seconds per step and videos/s at batch 2 (median of timed steps after warm-up).
For sampling (batch 1, one 16-frame clip): seconds per denoiser call, seconds for a
100-step DDIM sample (PVDM: + the decoder), and the compile-time memory estimate.

Prints one JSON object (device, date, versions, per-model results).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from vdiff.methods import get_method  # noqa: E402
from vdiff.methods.pvdm import PVDMAutoencoderStage, PVDMLatentStage  # noqa: E402
from vdiff.train import sharding  # noqa: E402
from vdiff.train.setup import build_train_fns  # noqa: E402

GIB = 2.0 ** 30


def load_config(path: str, arg: str | None = None):
    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def configs(tiny: bool):
    arg = "runlocal" if tiny else None
    ae = load_config("configs/pvdm_ae_ucf.py", arg)
    ae.pvdm.gan_start_step = 0  # measure the heavier adversarial stage
    ldm = load_config("configs/pvdm_ldm_ucf.py", arg)
    vdm = load_config("configs/vdm_ucf.py", arg)
    vdm.data.num_images_per_video = 0
    vdm.data.num_frames, vdm.data.resolution = ae.data.num_frames, ae.data.resolution
    if not tiny:
        vdm.model.update(dict(dtype="bfloat16", spatial_attention_impl="cudnn"))
    return ae, ldm, vdm


def random_batch(method, batch_size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: (rng.integers(0, 256, v.shape).astype(v.dtype) if v.dtype == np.uint8
                else np.zeros(v.shape, v.dtype))
            for k, v in method.example_batch(batch_size).items()}


def estimate_bytes(compiled) -> float:
    m = compiled.memory_analysis()
    return float(m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes
                 - m.alias_size_in_bytes)


def compile_step(config, method, batch_size: int):
    config = config.copy_and_resolve_references()
    config.train.batch_size = batch_size
    mesh = sharding.make_mesh((1, 1, 1))
    fns = build_train_fns(config, method, mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(fns.rules):
        state = fns.init(jax.random.key(0))
        batch = fns.global_batch(random_batch(method, batch_size))
        t0 = time.perf_counter()
        compiled = fns.step.lower(state, batch, jax.random.key(1)).compile()
        compile_s = time.perf_counter() - t0
    return fns, mesh, state, batch, compiled, compile_s


def time_steps(fns, mesh, state, batch, compiled, steps: int = 5) -> tuple[float, Any]:
    times = []
    with jax.set_mesh(mesh), nn.logical_axis_rules(fns.rules):
        for i in range(steps + 2):
            t0 = time.perf_counter()
            state, metrics = compiled(state, batch, jax.random.key(i))
            jax.block_until_ready(metrics["loss"])
            times.append(time.perf_counter() - t0)
    return float(np.median(times[2:])), state


def train_table(name: str, config, method, budget_gib: float, check: bool = True,
                progress=None, batches: tuple[int, ...] = (1, 2)) -> dict:
    out: dict = {"model": name}
    est = {}
    for b in batches:
        try:
            fns, mesh, state, batch, compiled, cs = compile_step(config, method, b)
        except Exception as e:  # noqa: BLE001 - a compile that fails is the measurement
            out[f"compile_b{b}_error"] = str(e)[:300]
            if progress:
                progress(out)
            continue
        est[b] = estimate_bytes(compiled)
        out[f"compile_s_b{b}"] = cs
        out[f"estimate_gib_b{b}"] = est[b] / GIB
        out["params"] = int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))
        try:
            s, state = time_steps(fns, mesh, state, batch, compiled)
            out.update({f"step_s_b{b}": s, f"videos_per_s_b{b}": b / s})
        except Exception as e:  # noqa: BLE001 - running out of memory is the measurement
            out[f"step_b{b}_error"] = str(e)[:300]
        del fns, state, batch, compiled
        if progress:
            progress(out)
    if 1 not in est or 2 not in est:
        print(json.dumps(out), flush=True)
        return out
    per_example = est[2] - est[1]
    fixed = est[1] - per_example
    largest = int((budget_gib * GIB - fixed) // max(per_example, 1.0))
    out.update(per_example_gib=per_example / GIB, budget_gib=budget_gib,
               largest_batch_estimate=largest)
    if largest >= 1 and check:
        try:
            fns, mesh, state, batch, compiled, _ = compile_step(config, method, largest)
            out["estimate_gib_largest"] = estimate_bytes(compiled) / GIB
            s, _ = time_steps(fns, mesh, state, batch, compiled, steps=2)
            out.update(largest_batch_ran=True, step_s_largest=s,
                       videos_per_s_largest=largest / s)
            del fns, state, batch, compiled
        except Exception as e:  # noqa: BLE001 - an OOM here is the measurement
            out.update(largest_batch_ran=False, largest_batch_error=str(e)[:300])
    print(json.dumps(out), flush=True)
    return out


def timed(fn, *args, reps: int = 3) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def sampling_table(name: str, method, params, steps: int = 100) -> dict:
    from vdiff.diffusion import samplers

    if isinstance(method, PVDMLatentStage):
        shape = (1, method.num_tokens, method.latent_channels)
        cond = jnp.zeros(shape, jnp.float32)
        call = jax.jit(lambda p, z: method.denoiser(p, cond)(z, jnp.zeros((1,))))
        full = jax.jit(lambda p, r: method.generate_long_video(
            p, r, 1, method.clip_frames, sampler="ddim", num_steps=steps))
    else:
        d = method.config.data
        shape = (1, d.num_frames, d.resolution, d.resolution, method.channels)
        labels = jnp.zeros((1,), jnp.int32)
        call = jax.jit(lambda p, z: method.denoiser(p, labels=labels)(z, jnp.zeros((1,))))
        full = jax.jit(lambda p, r: samplers.ddim_sample(
            denoise_fn=method.denoiser(p, labels=labels), rng=r, shape=shape,
            logsnr_schedule=method.schedule, num_steps=steps, clip_x0=True))
    del call  # per-call time is derived from the full sample (one compile fewer)
    compiled = full.lower(params, jax.random.key(0)).compile()
    seconds = timed(compiled, params, jax.random.key(0), reps=1)
    out = {"model": name, f"ddim{steps}_sample_s": seconds,
           "seconds_per_denoiser_call_incl_decode": seconds / steps,
           "sample_memory_estimate_gib": estimate_bytes(compiled) / GIB}
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="")
    parser.add_argument("--budget_gib", type=float, default=80.0)
    parser.add_argument("--only", default="ae,ldm,vdm,sample")
    parser.add_argument("--tiny", action="store_true", help="runlocal configs (CPU check)")
    parser.add_argument("--sample_steps", type=int, default=100)
    parser.add_argument("--vdm_batches", default="1,2",
                        help="batch sizes of the pixel-VDM row (one call may not fit both)")
    parser.add_argument("--no_check", action="store_true",
                        help="skip running one step at the extrapolated largest batch")
    args = parser.parse_args()
    only = set(args.only.split(","))
    ae_cfg, ldm_cfg, vdm_cfg = configs(args.tiny)
    ae = PVDMAutoencoderStage(ae_cfg)
    d = ae_cfg.data
    ae_params = jax.jit(ae.model.init)(jax.random.key(0), jnp.zeros(
        (1, d.num_frames, d.resolution, d.resolution, 3), jnp.float32))["params"]
    ae_params = sharding.strip_boxes(ae_params)
    ldm = PVDMLatentStage(ldm_cfg, autoencoder=(ae_cfg, ae_params))
    vdm = get_method(vdm_cfg)
    result = {"benchmark": "pvdm_efficiency", "date": datetime.date.today().isoformat(),
              "device": jax.devices()[0].device_kind, "jax": jax.__version__,
              "clip": f"{d.num_frames}x{d.resolution}x{d.resolution}x3", "dtype": "bfloat16 compute, float32 params",
              "xla_python_client_mem_fraction": os.environ.get(
                  "XLA_PYTHON_CLIENT_MEM_FRACTION", "default (0.75)"),
              "train": [], "sample": []}

    def save():
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=2)

    if "ae" in only:
        result["train"].append(train_table("pvdm_autoencoder (GAN stage, remat)", ae_cfg, ae,
                                           args.budget_gib))
        save()
    if "ldm" in only:
        result["train"].append(train_table("pvdm_latent_unet (+ frozen encoder, 2 clips)",
                                           ldm_cfg, ldm, args.budget_gib, not args.no_check))
        save()
    if "vdm" in only:
        row: dict = {}
        result["train"].append(row)

        def progress(out):
            row.clear()
            row.update(out)
            save()

        progress(train_table("vdm_pixel_unet (configs/vdm_ucf.py at 256 px)", vdm_cfg, vdm,
                             args.budget_gib, not args.no_check, progress=progress,
                             batches=tuple(int(b) for b in args.vdm_batches.split(","))))
    if "sample" in only:
        p = {"unet": sharding.strip_boxes(ldm.model.init(
            jax.random.key(1), ldm.planes(jnp.zeros((1, ldm.num_tokens, ldm.latent_channels))),
            jnp.zeros((1,)),
            cond=ldm.planes(jnp.zeros((1, ldm.num_tokens, ldm.latent_channels))))["params"]),
             "autoencoder": ae_params}
        result["sample"].append(sampling_table("pvdm", ldm, p, args.sample_steps))
        save()
        vp = sharding.strip_boxes(jax.jit(lambda r: vdm.init(r, random_batch(vdm, 1)))(
            jax.random.key(2)))
        result["sample"].append(sampling_table("vdm_pixel", vdm, vp, args.sample_steps))
        save()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
