"""Peak memory and step time of DreamPose subject finetuning at SD-1.5 size.

    python benchmarks/speed/dreampose_memory.py          # GPU: SD 1.5 UNet, 512², bf16 + remat
    python benchmarks/speed/dreampose_memory.py --tiny   # CPU smoke test (micro model)
    python benchmarks/speed/dreampose_memory.py --batch_sizes=1,2,4 --no_remat --dtype=float32

The UNet is `UNetConfig()` (SD 1.5: 860M parameters) with random weights and 10 extra
pose input channels, conditioned on a 257-token context from the identity-initialised
adapter; 64×64×4 latents (512×512 images). CLIP and the VAE are frozen in DreamPose's
subject stage and run once per example, so the benchmark feeds precomputed latents and
CLIP tokens and trains exactly what the subject stage trains (UNet + adapter, Adam) through
the shared `train_step`. Prints one JSON object per batch size (and writes them to --out):
XLA's compiled memory analysis, `device.memory_stats()` peak, step time.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vdiff.diffusion import targets
from vdiff.models import dreampose as dp
from vdiff.models.sd.latent_diffusion import DiscreteSchedule
from vdiff.models.sd.unet import UNet2DConditionModel, UNetConfig
from vdiff.train.state import TrainState, make_optimizer
from vdiff.train.train_step import train_step


class SubjectStep:
    """The subject stage's loss on precomputed latents / CLIP tokens."""

    def __init__(self, unet, schedule, p_drop=0.05):
        self.unet, self.schedule, self.p = unet, schedule, p_drop
        self.adapter = dp.ImageConditionAdapter()

    def loss(self, params, batch, rng, *, train=True, step=None):
        x0, tokens, subj, pose = batch["latent"], batch["clip_tokens"], batch["subject"], batch["pose"]
        b = x0.shape[0]
        r_d, r_t, r_e = jax.random.split(rng, 3)
        ctx = self.adapter.apply({"params": params["adapter"]}, tokens, subj)
        keep_i, keep_p = dp.condition_dropout(r_d, b, p_image=self.p, p_pose=self.p, p_both=self.p)
        ctx = jnp.where(keep_i[:, None, None], ctx, 0.0)
        pose = jnp.where(keep_p[:, None, None, None], pose, 0.0)
        t = jax.random.randint(r_t, (b,), 0, self.schedule.num_timesteps)
        logsnr = jnp.asarray(self.schedule.logsnr_table)[t]
        eps = jax.random.normal(r_e, x0.shape)
        z = targets.q_sample(x0=x0, eps=eps, logsnr=logsnr)
        out = self.unet.apply({"params": params["unet"]}, jnp.concatenate([z, pose], -1),
                              t.astype(jnp.float32), ctx)
        return jnp.mean(jnp.square(out - eps)), {}


def measure(unet_cfg, latent: int, tokens: int, batch: int, dtype, remat: bool, steps: int):
    cfg = dataclasses.replace(unet_cfg, in_channels=unet_cfg.in_channels + dp.POSE_CHANNELS)
    unet = UNet2DConditionModel(cfg, dtype=dtype, remat=remat)
    d = cfg.cross_attention_dim
    method = SubjectStep(unet, DiscreteSchedule.from_scheduler_config({}))
    tc = ml_collections.ConfigDict(dict(lr=1e-5, lr_schedule="constant", warmup_steps=0,
                                        grad_clip=1.0, b1=0.9, b2=0.999, adam_eps=1e-8,
                                        weight_decay=0.0, num_steps=1000))
    tx, schedule = make_optimizer(tc)
    rng = np.random.default_rng(0)
    b = {"latent": rng.normal(size=(batch, latent, latent, 4)),
         "clip_tokens": rng.normal(size=(batch, tokens, d)),
         "subject": rng.normal(size=(batch, latent, latent, 4)),
         "pose": rng.uniform(-1, 1, size=(batch, latent, latent, dp.POSE_CHANNELS))}
    b = {k: jnp.asarray(v, jnp.float32) for k, v in b.items()}

    def init(key):
        p = {"unet": unet.init(key, jnp.zeros((1, latent, latent, cfg.in_channels)),
                               jnp.zeros((1,)), jnp.zeros((1, tokens, d)))["params"],
             "adapter": method.adapter.init(key, b["clip_tokens"][:1], b["subject"][:1])["params"]}
        return TrainState(step=jnp.zeros((), jnp.int32), params=p,
                          ema_params=None, opt_state=tx.init(p))

    # Abstract state for the compile (no init compile or allocation needed to get XLA's
    # memory analysis); the real state is built only when steps are timed.
    abstract = jax.eval_shape(init, jax.random.key(0))

    def step_fn(state, batch, rng):  # the shared train_step, without an EMA copy
        st = state.replace(ema_params=state.params)
        new, m = train_step(st, batch, rng, method=method, tx=tx, schedule=schedule,
                            ema_decay=0.0)
        return new.replace(ema_params=None), m["loss"]

    t0 = time.perf_counter()
    compiled = jax.jit(step_fn, donate_argnums=(0,)).lower(abstract, b,
                                                           jax.random.key(1)).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    analysis = None if mem is None else {
        k: int(getattr(mem, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                          "temp_size_in_bytes", "generated_code_size_in_bytes",
                                          "alias_size_in_bytes") if hasattr(mem, k)}
    times, loss, n_params = [], None, sum(
        int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
    if steps:
        state = jax.jit(init)(jax.random.key(0))
        state, loss = compiled(state, b, jax.random.key(1))
        jax.block_until_ready(loss)
    for i in range(steps):
        t = time.perf_counter()
        state, loss = compiled(state, b, jax.random.key(2 + i))
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - t)
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    return {
        "benchmark": "dreampose_subject_finetune_memory",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": dev.device_kind, "platform": dev.platform, "jax": jax.__version__,
        "batch_size": batch, "latent": latent, "image": latent * 8, "context_tokens": tokens,
        "dtype": jnp.dtype(dtype).name, "remat": remat, "trainable_params": n_params,
        "compile_s": round(compile_s, 2),
        "step_s_median": float(np.median(times)) if times else None,
        "step_s_all": [round(t, 4) for t in times], "loss": None if loss is None else float(loss),
        "xla_memory_analysis": analysis,
        "xla_peak_estimate_gib": None if analysis is None else round(
            (analysis.get("argument_size_in_bytes", 0) + analysis.get("temp_size_in_bytes", 0)
             + analysis.get("output_size_in_bytes", 0) - analysis.get("alias_size_in_bytes", 0))
            / 2**30, 3),
        "peak_bytes_in_use_gib": None if not stats else round(
            stats.get("peak_bytes_in_use", 0) / 2**30, 3),
        "bytes_limit_gib": None if not stats else round(stats.get("bytes_limit", 0) / 2**30, 3),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="micro UNet, 8×8 latents (CPU check)")
    p.add_argument("--batch_sizes", default="1,2")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--no_remat", action="store_true")
    p.add_argument("--steps", type=int, default=5,
                   help="timed steps; 0 = compile only (XLA's memory analysis, no weights)")
    p.add_argument("--out", default="")
    a = p.parse_args()
    if a.tiny:
        cfg, latent, tokens = dp.tiny_configs("micro")["unet"], 8, 5
    else:
        cfg, latent, tokens = UNetConfig(), 64, 257  # SD 1.5; ViT-L/14 at 224: 1 + 16²
    dtype = jnp.bfloat16 if a.dtype == "bfloat16" else jnp.float32
    results = []
    for bs in (int(s) for s in a.batch_sizes.split(",")):
        try:
            r = measure(cfg, latent, tokens, bs, dtype, not a.no_remat, a.steps)
        except Exception as e:  # noqa: BLE001  (OOM at a larger batch: report, go on)
            r = {"batch_size": bs, "error": f"{type(e).__name__}: {str(e)[:500]}"}
        print(json.dumps(r), flush=True)
        results.append(r)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
