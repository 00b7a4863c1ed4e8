"""PVDM: projected latent video diffusion (Yu et al., CVPR 2023, arXiv 2302.07685).

Two stages, two methods, both driven by the shared `train_step` and trainer:

``pvdm_ae`` — the projected autoencoder (`vdiff.models.pvdm_autoencoder`). Loss

    L = w₁ |x − x̂|₁ + w_p LPIPS(x, x̂)                              (reconstruction)
      + g(step) λ L_G(x̂),   L_G = −D₂(x̂) − D₃(x̂)                  (generator, hinge)
      + g(step) L_D,  L_D = Σ_{D ∈ {D₂, D₃}} relu(1 − D(x)) + relu(1 + D(sg x̂))

with a per-frame 2D and a 3D patch discriminator, g(step) = 1[step ≥ gan_start_step]. The
generator term sees the discriminators through stop-gradient and the discriminator term
sees x̂ through stop-gradient, so one gradient of L gives each parameter group exactly its
own objective; the two groups get their own Adam (`optimizer`: one optax
`multi_transform` in one train state). The adversarial weight λ is

    'adaptive':  λ = w_adv · ‖∇_x̂ L_rec‖ / (‖∇_x̂ L_G‖ + 10⁻⁴), clipped to [0, adaptive_max]
    'scheduled': λ = w_adv · min(1, (step − gan_start_step) / gan_ramp_steps)

The adaptive rule is VQGAN's balance measured at the decoder *output* rather than at its
last weight matrix: both losses reach the parameters through the same decoder Jacobian, so
balancing their pixel gradients is a cheap proxy that needs no second backward pass
through the network, and λ can never let L_G dominate the reconstruction.

``pvdm_ldm`` — diffusion over the triplane latents of a trained, frozen autoencoder with
one 2D UNet shared by the three planes (`vdiff.models.pvdm_unet`). A training example is
2S frames = two consecutive clips (x¹, x²); the model learns p(z²) and p(z² | z¹) jointly:

    cond = z¹ with probability λ (`cond_prob`), else 0;   loss on z² as in VDM

(cond_prob = 0 → an unconditional model on S-frame clips). The latents are flattened into
one token array [B, H′W′ + SW′ + SH′, C] (`triplane.to_tokens`) so every shared sampler in
`vdiff.diffusion.samplers` runs on them unchanged. Long videos: clip 1 from cond = 0, clip
k + 1 conditioned on the sampled latents of clip k, all decoded and concatenated
(`generate_long_video`, one `lax.scan` so any length compiles once).

The frozen autoencoder's parameters are copied into the LDM's train state at init (under
'autoencoder', never updated), so the LDM checkpoint carries the exact decoder it was
trained with. Constructing the method still reads the autoencoder run (`config.json` for
the architecture, and its latest checkpoint for `init`), so that run must stay available.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vdiff import config_lib, errors, runtime
from vdiff.core.checkpoints import restore_ema_params
from vdiff.diffusion import guidance, losses, samplers, schedules, targets
from vdiff.errors import ConfigError
from vdiff.methods.base import Method
from vdiff.models import triplane
from vdiff.models.pvdm_autoencoder import PVDMAutoencoder
from vdiff.models.pvdm_discriminators import (PatchDiscriminator2D, PatchDiscriminator3D,
                                              hinge_d_loss, hinge_g_loss)
from vdiff.models.pvdm_unet import TriplaneUNet
from vdiff.train import sharding
from vdiff.train.state import make_optimizer
from vdiff.core.pixels import to_unit_range

STAGES = ("pvdm_ae", "pvdm_ldm")


# --------------------------------------------------------------------------------------------
# config


def pvdm_defaults(stage: str) -> ml_collections.ConfigDict:
    """Every key a PVDM run reads (data/train/sample/mesh/sharding as in `vdm_defaults`).

    model (stage pvdm_ae, the autoencoder):
      patch_size, latent_channels, width, encoder_depth, decoder_depth, projection_depth,
      head_dim, mlp_ratio, remat, attention_impl ('xla' | 'cudnn'), dtype
    model (stage pvdm_ldm, the triplane UNet):
      base_channels, channel_mults, num_res_blocks, attn_levels (downsampling levels with
      joint attention; level i = factor 2^i), head_dim, dropout, remat, attention_impl, dtype,
      axis_positions (coordinate features in joint attention; models/pvdm_unet.py; off),
      plane_inputs (one-hot plane identity channels at the UNet's input, so its shared
      convolutions can treat content and motion planes differently; on; configs saved
      before it existed read as off),
      num_classes (0: unconditional; else batch["label"] in [0, n) conditions the UNet,
      dropped to the null class n with probability diffusion.cond_drop_prob, so sampling
      can use classifier-free guidance)
    pvdm (autoencoder):
      l1_weight, lpips_weight, lpips_net ('alexnet' | 'vgg16'), lpips_frames (frames per
      clip scored by LPIPS each step, 0 = all), gan_start_step (−1: no adversarial stage),
      gan_weight, gan_weight_mode ('adaptive' | 'scheduled'), gan_ramp_steps,
      adaptive_max_weight, disc_channels, disc_layers, disc_lr, disc_b1, disc_b2
      latent_noise          σ: training decodes z + σ·N(0, I) instead of z (0: off). The
                            decoder learns to tolerate latent errors of that size (a latent
                            model's samples are never exact), and since z is tanh-bounded
                            the encoder can only beat the noise with well-separated codes
    pvdm (latent diffusion):
      autoencoder_workdir   the trained pvdm_ae run (its config.json and latest checkpoint),
                            or a folder from `python -m vdiff.methods.pvdm WORKDIR OUT`
      clip_frames           S, frames per clip (= the autoencoder's data.num_frames)
      cond_prob             λ: probability of conditioning on the previous clip (0: off);
                            data.num_frames must be 2S when λ > 0
      sample_num_frames     length of the trainer's periodic samples (0: data.num_frames)
      sampler               sampler of periodic samples and FVD ('ancestral', 'ddim', ...)
      cache_latents         encode every training example once at the start and train from
                            the cached latents (no encoder in the train step: at the digits
                            setting the frozen encoder is 70 % of the step's FLOPs). Needs
                            a dataset of fixed clips: stored length = data.num_frames, no
                            flips (moving digits)
      sample_labels         classes the periodic samples and the sampling evaluators cycle
                            through (class-conditional models; empty: 0 … num_classes − 1);
                            their guidance weight is sample.guidance_scale (evaluators: their
                            own guidance_scale setting)
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown PVDM stage {stage!r}; known: {STAGES}")
    base = config_lib.vdm_defaults()
    c = ml_collections.ConfigDict()
    c.method, c.seed = stage, 0
    c.data = base.data
    c.data.update(dict(name="ucf101", channels=3, num_frames=16, resolution=256,
                       random_flip=True, temporal_crop="random"))
    if stage == "pvdm_ae":
        c.model = ml_collections.ConfigDict(dict(
            patch_size=8, latent_channels=4, width=384, encoder_depth=8, decoder_depth=8,
            projection_depth=2, head_dim=64, mlp_ratio=4.0, remat=False, attention_impl="auto",
            dtype="auto"))
    else:
        c.model = ml_collections.ConfigDict(dict(
            base_channels=256, channel_mults=(1, 2, 4, 4), num_res_blocks=2,
            attn_levels=(0, 1, 2), head_dim=64, dropout=0.0, remat=False,
            attention_impl="auto", dtype="auto", axis_positions=False, plane_inputs=True,
            num_classes=0))
    c.diffusion = base.diffusion
    c.diffusion.update(dict(parameterization="eps", loss_space="eps", schedule="linear_beta",
                            cond_drop_prob=0.0))
    c.pvdm = ml_collections.ConfigDict(dict(
        l1_weight=1.0, lpips_weight=1.0, lpips_net="alexnet", lpips_frames=4,
        gan_start_step=-1, gan_weight=0.1, gan_weight_mode="adaptive", gan_ramp_steps=2000,
        adaptive_max_weight=1.0, disc_channels=64, disc_layers=3, disc_lr=1e-4,
        disc_b1=0.5, disc_b2=0.9, latent_noise=0.0,
        autoencoder_workdir="", clip_frames=16, cond_prob=0.5, sample_num_frames=0,
        sampler="ddim", cache_latents=False, sample_labels=()))
    c.train = base.train
    c.train.update(dict(batch_size=8, num_steps=100_000, lr=1e-4, warmup_steps=0, b1=0.9,
                        b2=0.999, weight_decay=0.0, ema_decay=0.0))
    c.sample = base.sample
    c.sample.num_steps = 100
    c.evals = base.evals
    c.mesh = base.mesh
    c.sharding = base.sharding
    return c


def build_autoencoder(model_config: Any, channels: int) -> PVDMAutoencoder:
    m = model_config
    return PVDMAutoencoder(
        patch_size=int(m.patch_size), latent_channels=int(m.latent_channels),
        width=int(m.width), encoder_depth=int(m.encoder_depth),
        decoder_depth=int(m.decoder_depth), projection_depth=int(m.projection_depth),
        head_dim=int(m.head_dim), mlp_ratio=float(m.mlp_ratio), channels=int(channels),
        remat=bool(m.remat), attention_impl=runtime.attention_impl(m.attention_impl),
        dtype=runtime.compute_dtype(m.dtype))


def to_rgb(x: jax.Array) -> jax.Array:
    """Grey frames repeated to three channels (LPIPS is an RGB network)."""
    return jnp.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def _check_data(config: Any, frames: int) -> None:
    d = config.data
    if int(d.num_images_per_video):
        raise ConfigError("PVDM trains on clips only: set data.num_images_per_video=0")
    if int(d.num_frames) != frames:
        raise ConfigError(f"data.num_frames={d.num_frames} but this PVDM stage needs "
                          f"{frames} frames per example")


# --------------------------------------------------------------------------------------------
# stage 1: the projected autoencoder


class PVDMAutoencoderStage(Method):
    """`pvdm_ae`: reconstruction (L1 + LPIPS) and an optional adversarial stage."""

    applications: dict[str, str] = {}
    application_hint = ("the PVDM autoencoder stage generates nothing: sample from a pvdm_ldm "
                        "run, or use --mode=eval for reconstruction PSNR/LPIPS")
    evaluators = ("pvdm_reconstruction",)

    def __init__(self, config: Any):
        self.config = config
        self.channels = int(config.data.channels)
        self.num_frames = int(config.data.num_frames)
        self.resolution = int(config.data.resolution)
        _check_data(config, self.num_frames)
        if self.resolution % int(config.model.patch_size):
            raise ConfigError(f"data.resolution={self.resolution} is not divisible by "
                              f"model.patch_size={config.model.patch_size}")
        self.model = build_autoencoder(config.model, self.channels)
        p = config.pvdm
        self.gan = int(p.gan_start_step) >= 0
        if p.gan_weight_mode not in ("adaptive", "scheduled"):
            raise ConfigError(f"pvdm.gan_weight_mode {p.gan_weight_mode!r}: use 'adaptive' "
                              "or 'scheduled'")
        dt = runtime.compute_dtype(config.model.dtype)
        self.disc2d = PatchDiscriminator2D(int(p.disc_channels), int(p.disc_layers), dtype=dt)
        self.disc3d = PatchDiscriminator3D(int(p.disc_channels), int(p.disc_layers), dtype=dt)
        self.lpips_weight = float(p.lpips_weight)
        if self.lpips_weight:
            from vdiff.eval import lpips

            if self.resolution < lpips.MIN_SIZE[p.lpips_net]:
                raise ConfigError(f"LPIPS-{p.lpips_net} needs frames of at least "
                                  f"{lpips.MIN_SIZE[p.lpips_net]} px (data.resolution="
                                  f"{self.resolution}); set pvdm.lpips_weight=0")
            self.lpips_model = lpips.LPIPS(p.lpips_net)
            self.lpips_params = lpips.load_params(p.lpips_net)

    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        r = self.resolution
        return {"video": np.zeros((batch_size, self.num_frames, r, r, self.channels), np.uint8),
                "label": np.zeros((batch_size,), np.int32)}

    def optimizer(self, train_config: Any) -> tuple[optax.GradientTransformation, Any]:
        """Adam(W) from `train` for the autoencoder, GAN-style Adam for the discriminators."""
        tx, schedule = make_optimizer(train_config)
        p = self.config.pvdm
        disc = optax.chain(optax.clip_by_global_norm(float(train_config.grad_clip or 1e9)),
                           optax.adam(float(p.disc_lr), b1=float(p.disc_b1),
                                      b2=float(p.disc_b2)))
        labels = lambda params: {k: ("autoencoder" if k == "autoencoder" else "disc")  # noqa: E731
                                 for k in params}
        return optax.multi_transform({"autoencoder": tx, "disc": disc}, labels), schedule

    def init(self, rng: jax.Array, batch: dict[str, Any]) -> Any:
        video = to_unit_range(batch["video"])
        r_ae, r_2d, r_3d = jax.random.split(rng, 3)
        params = {"autoencoder": self.model.init({"params": r_ae}, video)["params"]}
        if self.gan:
            params["disc2d"] = self.disc2d.init({"params": r_2d}, video)["params"]
            params["disc3d"] = self.disc3d.init({"params": r_3d}, video)["params"]
        return params

    # -- pieces ------------------------------------------------------------
    def encode(self, params: Any, video: jax.Array) -> triplane.Triplane:
        return self.model.apply({"params": params["autoencoder"]}, video,
                                method=self.model.encode)

    def decode(self, params: Any, planes: triplane.Triplane) -> jax.Array:
        return self.model.apply({"params": params["autoencoder"]}, planes,
                                method=self.model.decode)

    def lpips(self, x: jax.Array, y: jax.Array, rng: jax.Array | None) -> jax.Array:
        """Mean LPIPS over `lpips_frames` random frames (the same ones for x and y)."""
        n = int(self.config.pvdm.lpips_frames)
        if n and n < x.shape[1] and rng is not None:
            idx = jax.random.choice(rng, x.shape[1], (n,), replace=False)
            x, y = x[:, idx], y[:, idx]
        flat = lambda v: to_rgb(v.reshape(-1, *v.shape[2:]))  # noqa: E731
        return jnp.mean(self.lpips_model.apply({"params": self.lpips_params}, flat(x), flat(y)))

    def reconstruction_loss(self, x: jax.Array, recon: jax.Array,
                            rng: jax.Array | None) -> tuple[jax.Array, dict[str, jax.Array]]:
        l1 = jnp.mean(jnp.abs(x - recon))
        total = float(self.config.pvdm.l1_weight) * l1
        metrics = {"l1": l1}
        if self.lpips_weight:
            lp = self.lpips(x, recon, rng)
            total = total + self.lpips_weight * lp
            metrics["lpips"] = lp
        return total, metrics

    def _logits(self, params: Any, video: jax.Array) -> tuple[jax.Array, jax.Array]:
        return (self.disc2d.apply({"params": params["disc2d"]}, video),
                self.disc3d.apply({"params": params["disc3d"]}, video))

    def adversarial_weight(self, x: jax.Array, recon: jax.Array, disc_params: Any,
                           rng: jax.Array, step: jax.Array) -> jax.Array:
        p = self.config.pvdm
        if p.gan_weight_mode == "scheduled":
            ramp = (step - int(p.gan_start_step)) / max(int(p.gan_ramp_steps), 1)
            return float(p.gan_weight) * jnp.clip(ramp, 0.0, 1.0)
        r = jax.lax.stop_gradient(recon)
        g_rec = jax.grad(lambda v: self.reconstruction_loss(x, v, rng)[0])(r)
        g_adv = jax.grad(lambda v: self.generator_loss(disc_params, v))(r)
        ratio = jnp.linalg.norm(g_rec) / (jnp.linalg.norm(g_adv) + 1e-4)
        return float(p.gan_weight) * jnp.clip(jax.lax.stop_gradient(ratio), 0.0,
                                              float(p.adaptive_max_weight))

    def generator_loss(self, disc_params: Any, recon: jax.Array) -> jax.Array:
        f2, f3 = self._logits(disc_params, recon)
        return hinge_g_loss(f2) + hinge_g_loss(f3)

    # -- training ----------------------------------------------------------
    def loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array, *,
             train: bool = True, step: jax.Array | None = None
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        with jax.named_scope("pvdm_ae_loss"):
            x = to_unit_range(batch["video"])
            rng_lpips, rng_noise = jax.random.split(rng)
            planes = self.encode(params, x)
            latent_abs_mean = jnp.mean(jnp.stack([jnp.mean(jnp.abs(z)) for z in planes]))
            sigma = float(self.config.pvdm.latent_noise)
            if sigma and train:
                noise = jax.random.split(rng_noise, len(planes))
                planes = triplane.Triplane(*(
                    z + sigma * jax.random.normal(r, z.shape, z.dtype)
                    for z, r in zip(planes, noise)))
            recon = self.decode(params, planes)
            total, metrics = self.reconstruction_loss(x, recon, rng_lpips)
            metrics["psnr"] = jnp.mean(
                10 * jnp.log10(4.0 / jnp.maximum(jnp.mean((x - recon) ** 2, (1, 2, 3, 4)), 1e-10)))
            metrics["latent_abs_mean"] = latent_abs_mean
            if self.gan:
                step = jnp.asarray(jnp.iinfo(jnp.int32).max if step is None else step)
                on = (step >= int(self.config.pvdm.gan_start_step)).astype(jnp.float32)
                frozen = jax.lax.stop_gradient({k: params[k] for k in ("disc2d", "disc3d")})
                g_loss = self.generator_loss(frozen, recon)
                weight = self.adversarial_weight(x, recon, frozen, rng_lpips, step)
                r2, r3 = self._logits(params, x)
                f2, f3 = self._logits(params, jax.lax.stop_gradient(recon))
                d_loss = hinge_d_loss(r2, f2) + hinge_d_loss(r3, f3)
                total = total + on * (weight * g_loss + d_loss)
                metrics.update(g_loss=g_loss, d_loss=d_loss, adv_weight=weight * on,
                               logits_real=0.5 * (jnp.mean(r2) + jnp.mean(r3)),
                               logits_fake=0.5 * (jnp.mean(f2) + jnp.mean(f3)))
        return total, metrics

    # -- periodic samples ----------------------------------------------------
    def sample(self, params: Any, rng: jax.Array, *, num_samples: int, **unused: Any) -> jax.Array:
        """Held-out clips next to their reconstructions (side by side), [N, S, H, 2W, C]."""
        del rng, unused
        clips = to_unit_range(jnp.asarray(held_out_clips(self.config, num_samples)))
        recon = self.model.apply({"params": params["autoencoder"]}, clips)[0]
        return jnp.concatenate([clips, jnp.clip(recon, -1, 1)], axis=3)


def held_out_clips(config: Any, num: int, *, split: str = "test", seed: int = 0) -> np.ndarray:
    """`num` uint8 clips [num, T, R, R, C] of `split` (deterministic, no augmentation)."""
    from vdiff.data import pipeline

    return pipeline.take_clips(config.data, num, split=split, seed=seed, random_flip=False,
                               temporal_crop="first")


# --------------------------------------------------------------------------------------------
# stage 2: latent diffusion over the triplane


def load_autoencoder_config(workdir: str) -> ml_collections.ConfigDict:
    from vdiff.core.workdir import config_path, read_config

    path = config_path(workdir)
    cfg = read_config(workdir)
    if cfg is None:
        raise ConfigError(
            f"pvdm.autoencoder_workdir={workdir!r} holds no trained autoencoder "
            f"({path} is missing): train one first, e.g. python -m vdiff.main "
            f"--config=configs/pvdm_ae_digits.py --workdir=DIR, then pass "
            f"--config.pvdm.autoencoder_workdir=DIR")
    if cfg.method != "pvdm_ae":
        raise ConfigError(f"{path} is a {cfg.method!r} run, not a pvdm_ae autoencoder")
    return cfg


# An exported autoencoder: its config.json and this file (EMA autoencoder weights only, a
# quarter of a checkpoint: no optimizer state, no discriminators), small enough to move
# between machines and to read as `pvdm.autoencoder_workdir`.
EXPORTED_AUTOENCODER = "autoencoder_ema.msgpack"


def load_autoencoder_params(ae_config: Any, workdir: str) -> Any:
    """The autoencoder's EMA weights (host numpy) from the latest checkpoint in `workdir`,
    or from an `export_autoencoder` folder when `workdir` holds no checkpoints."""
    exported = os.path.join(workdir, EXPORTED_AUTOENCODER)
    if not os.path.isdir(os.path.join(workdir, "checkpoints")) and os.path.isfile(exported):
        from flax import serialization
        with open(exported, "rb") as f:
            return serialization.msgpack_restore(f.read())["params"]
    params, _ = restore_ema_params(ae_config, workdir, PVDMAutoencoderStage(ae_config),
                                   sharding.make_mesh((1, -1, 1)))
    return jax.tree.map(np.asarray, jax.device_get(params["autoencoder"]))


def export_autoencoder(workdir: str, out_dir: str) -> str:
    """Writes the trained autoencoder of `workdir` (latest checkpoint, EMA weights) to
    `out_dir` as config.json + EXPORTED_AUTOENCODER; returns the weights' path."""
    from flax import serialization

    config = load_autoencoder_config(workdir)
    params = load_autoencoder_params(config, workdir)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, EXPORTED_AUTOENCODER)
    with open(path + ".part", "wb") as f:
        f.write(serialization.msgpack_serialize({"params": params}))
    os.replace(path + ".part", path)  # whole or absent
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        f.write(config.to_json(indent=2))
    return path


class PVDMLatentStage(Method):
    """`pvdm_ldm`: ε/v diffusion on frozen-autoencoder triplanes, clip-conditional."""

    applications = {"unconditional": "vdiff.sampling:run_pvdm_sampling",  # one clip's frames
                    "extend": "vdiff.sampling:run_pvdm_sampling"}  # long videos, clip by clip
    evaluators = ("fvd", "digit_score", "heldout_loss", "nearest_train")

    def __init__(self, config: Any, *, autoencoder: tuple[Any, Any] | None = None):
        """`autoencoder` = (pvdm_ae config, its autoencoder params) bypasses
        `pvdm.autoencoder_workdir` (benchmarks, notebooks, tests)."""
        self.config = config
        p, d = config.pvdm, config.data
        self.ae_config = (autoencoder[0] if autoencoder is not None
                          else load_autoencoder_config(p.autoencoder_workdir))
        ae_data = self.ae_config.data
        self.clip_frames = int(p.clip_frames)
        self.cond_prob = float(p.cond_prob)
        if not 0.0 <= self.cond_prob <= 1.0:
            raise ConfigError(f"pvdm.cond_prob={self.cond_prob} must be in [0, 1]")
        self.conditional = self.cond_prob > 0
        if int(ae_data.num_frames) != self.clip_frames:
            raise ConfigError(f"pvdm.clip_frames={self.clip_frames} but the autoencoder "
                              f"was trained on {ae_data.num_frames}-frame clips")
        for key in ("resolution", "channels"):
            if int(ae_data[key]) != int(d[key]):
                raise ConfigError(f"data.{key}={d[key]} differs from the autoencoder's "
                                  f"{ae_data[key]} ({p.autoencoder_workdir})")
        _check_data(config, self.clip_frames * (2 if self.conditional else 1))
        self.channels, self.resolution = int(d.channels), int(d.resolution)
        self.autoencoder = build_autoencoder(self.ae_config.model, self.channels)
        am = self.ae_config.model
        self.latent_channels = int(am.latent_channels)
        self.template = triplane.plane_shapes(
            num_frames=self.clip_frames, height=self.resolution, width=self.resolution,
            patch_size=int(am.patch_size), channels=self.latent_channels)
        self.num_tokens = sum(a * b for a, b, _ in self.template)
        m = config.model
        self.num_classes = int(m.get("num_classes", 0))  # absent in older configs
        self.sample_label_list = tuple(int(x) for x in p.get("sample_labels", ()))
        if any(not 0 <= x < self.num_classes for x in self.sample_label_list):
            raise ConfigError(f"pvdm.sample_labels {self.sample_label_list} must lie in "
                              f"[0, model.num_classes={self.num_classes})")
        self.model = TriplaneUNet(
            out_channels=self.latent_channels, base_channels=int(m.base_channels),
            channel_mults=tuple(m.channel_mults), num_res_blocks=int(m.num_res_blocks),
            attn_levels=tuple(m.attn_levels), head_dim=int(m.head_dim),
            dropout=float(m.dropout), attention_impl=runtime.attention_impl(m.attention_impl),
            remat=bool(m.remat), dtype=runtime.compute_dtype(m.dtype),
            num_classes=self.num_classes,
            axis_positions=bool(m.get("axis_positions", False)),  # absent in older configs
            plane_inputs=bool(m.get("plane_inputs", False)))  # ditto: keeps their weights valid
        diff = config.diffusion
        self.parameterization = diff.parameterization
        targets.check_parameterization(self.parameterization)
        self.schedule = schedules.get_schedule(diff.schedule, logsnr_min=diff.logsnr_min,
                                               logsnr_max=diff.logsnr_max)
        self.num_frames = int(p.sample_num_frames) or int(d.num_frames)
        # Read now, outside any trace (init runs under jax.eval_shape / jit); host numpy.
        self.ae_params = (autoencoder[1] if autoencoder is not None
                          else load_autoencoder_params(self.ae_config, p.autoencoder_workdir))

    # -- shapes and pieces ---------------------------------------------------
    @property
    def clips_per_example(self) -> int:
        return 2 if self.conditional else 1

    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        if self.config.pvdm.get("cache_latents", False):
            return {"latents": np.zeros((batch_size, self.clips_per_example, self.num_tokens,
                                         self.latent_channels), np.float32),
                    "label": np.zeros((batch_size,), np.int32)}
        r, t = self.resolution, int(self.config.data.num_frames)
        return {"video": np.zeros((batch_size, t, r, r, self.channels), np.uint8),
                "label": np.zeros((batch_size,), np.int32)}

    # -- cached latents ----------------------------------------------------------
    def training_latents(self, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [N, clips, L, C], int32 labels [N]): the frozen encoder's latents of
        every example of the training split (clip 1 then clip 2 for a conditional model)
        and the examples' labels (data.label_from)."""
        from vdiff.data import pipeline

        d = self.config.data
        source = pipeline.get_data_source(d, split="train")
        first = source[0]
        stored = len(first["video"]) if "video" in first else None
        if stored != int(d.num_frames) or d.random_flip:
            raise ConfigError(
                "pvdm.cache_latents needs every training example to be one fixed clip: a "
                f"dataset of stored clips of exactly data.num_frames={d.num_frames} frames "
                f"(this one: {stored if stored is not None else 'variable-length videos'}) "
                f"and data.random_flip=False (is {d.random_flip}); set "
                "pvdm.cache_latents=False to encode each batch instead")
        n = len(source)
        clips, labels = pipeline.take_clips(d, n, split="train", seed=0, random_flip=False,
                                            temporal_crop="first", with_labels=True)
        s = self.clip_frames
        encode = jax.jit(lambda p, v: self.encode(p, to_unit_range(v)))
        params = {"autoencoder": self.ae_params}
        out = []
        for i in range(0, n, batch_size):
            chunk = clips[i:i + batch_size]
            per_clip = [encode(params, chunk[:, j * s:(j + 1) * s])
                        for j in range(self.clips_per_example)]
            out.append(np.stack([np.asarray(z) for z in per_clip], axis=1))
        return np.concatenate(out), labels

    def make_iterator(self, batch_size: int, seed: int):
        """The trainer's data source with pvdm.cache_latents (None: the shared pipeline).
        Examples are drawn uniformly with replacement from the cached latents."""
        if not self.config.pvdm.get("cache_latents", False):
            return None
        from vdiff.data.sampled_batches import SampledBatches

        latents, labels = self.training_latents()
        logging.info("pvdm: cached the latents of %d training examples (%.1f MB)",
                     len(latents), latents.nbytes / 2**20)

        def example(rng: np.random.Generator) -> dict[str, np.ndarray]:
            i = rng.integers(len(latents))
            return {"latents": latents[i], "label": labels[i]}

        return SampledBatches(example, batch_size, seed)

    def optimizer(self, train_config: Any) -> tuple[optax.GradientTransformation, Any]:
        """The UNet trains with `train`'s optimizer; the autoencoder copy is frozen."""
        tx, schedule = make_optimizer(train_config)
        labels = lambda params: {k: ("unet" if k == "unet" else "frozen")  # noqa: E731
                                 for k in params}
        return optax.multi_transform({"unet": tx, "frozen": optax.set_to_zero()},
                                     labels), schedule

    def planes(self, tokens: jax.Array) -> triplane.Triplane:
        like = triplane.Triplane(*(jax.ShapeDtypeStruct((tokens.shape[0], *s), tokens.dtype)
                                   for s in self.template))
        return triplane.from_tokens(tokens, like)

    def encode(self, params: Any, video: jax.Array) -> jax.Array:
        """Clips [B, S, H, W, C] in [−1, 1] → latent tokens [B, L, C] (no gradient)."""
        ae = jax.lax.stop_gradient(params["autoencoder"])
        planes = self.autoencoder.apply({"params": ae}, video, method=self.autoencoder.encode)
        return triplane.to_tokens(planes)

    def decode(self, params: Any, tokens: jax.Array) -> jax.Array:
        return self.autoencoder.apply({"params": params["autoencoder"]}, self.planes(tokens),
                                      method=self.autoencoder.decode)

    def apply(self, params: Any, z: jax.Array, logsnr: jax.Array, cond: jax.Array | None,
              *, labels: jax.Array | None = None, train: bool = False,
              rng: jax.Array | None = None) -> jax.Array:
        cond_planes = self.planes(cond) if self.conditional else None
        if self.num_classes and labels is None:
            raise ValueError("this latent model is class-conditional (model.num_classes="
                             f"{self.num_classes}): pass labels ({self.num_classes} = null)")
        out = self.model.apply({"params": params["unet"]}, self.planes(z), logsnr,
                               cond=cond_planes, labels=labels if self.num_classes else None,
                               train=train, rngs={"dropout": rng} if rng is not None else {})
        return triplane.to_tokens(out)

    def init(self, rng: jax.Array, batch: dict[str, Any]) -> Any:
        b = next(iter(batch.values())).shape[0]
        z = jnp.zeros((b, self.num_tokens, self.latent_channels), jnp.float32)
        cond = self.planes(z) if self.conditional else None
        labels = jnp.zeros((b,), jnp.int32) if self.num_classes else None
        unet = self.model.init({"params": rng}, self.planes(z), jnp.zeros((b,)), cond=cond,
                               labels=labels)
        return {"unet": unet["params"], "autoencoder": self.ae_params}

    # -- training --------------------------------------------------------------
    def loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array, *,
             train: bool = True, step: jax.Array | None = None
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        del step
        with jax.named_scope("pvdm_ldm_loss"):
            rng_c, rng_t, rng_eps, rng_drop, rng_label = jax.random.split(rng, 5)
            if "latents" in batch:  # pvdm.cache_latents: [B, clips, L, C]
                latents = jnp.asarray(batch["latents"], jnp.float32)
                b = latents.shape[0]
                z_prev, x0 = latents[:, 0], latents[:, -1]
            else:
                video = to_unit_range(batch["video"])
                b, s = video.shape[0], self.clip_frames
                if self.conditional:  # one encoder call for both clips
                    both = self.encode(params, jnp.concatenate([video[:, :s], video[:, s:]]))
                    z_prev, x0 = both[:b], both[b:]
                else:
                    z_prev, x0 = None, self.encode(params, video)
            if self.conditional:
                keep = jax.random.bernoulli(rng_c, self.cond_prob, (b, 1, 1))
                cond = jnp.where(keep, z_prev, 0.0)
            else:
                cond, keep = None, None
            labels = None
            if self.num_classes:  # classifier-free guidance: drop to the null class
                drop = jax.random.bernoulli(rng_label, float(self.config.diffusion.cond_drop_prob),
                                            (b,))
                labels = jnp.where(drop, self.num_classes, batch["label"].astype(jnp.int32))
            _, logsnr = losses.sample_logsnr(rng=rng_t, batch_size=b, schedule=self.schedule)
            eps = jax.random.normal(rng_eps, x0.shape, jnp.float32)
            z = targets.q_sample(x0=x0, eps=eps, logsnr=logsnr)
            out = self.apply(params, z, logsnr, cond, labels=labels, train=train, rng=rng_drop)
            d = self.config.diffusion
            per_example = losses.diffusion_loss(
                x0=x0, eps=eps, logsnr=logsnr, model_output=out,
                parameterization=self.parameterization, loss_space=d.loss_space,
                weighting=d.weighting)
            metrics = {"logsnr_mean": jnp.mean(logsnr), "latent_std": jnp.std(x0)}
            if keep is not None:
                k = keep[:, 0, 0].astype(jnp.float32)
                metrics["loss_conditional"] = jnp.sum(per_example * k) / jnp.maximum(k.sum(), 1)
                metrics["loss_unconditional"] = (jnp.sum(per_example * (1 - k))
                                                 / jnp.maximum((1 - k).sum(), 1))
        return jnp.mean(per_example), metrics

    # -- sampling ----------------------------------------------------------------
    def sample_labels(self, num: int) -> jax.Array | None:
        """Classes of `num` samples: cycling through pvdm.sample_labels (or every class);
        None for a model without classes."""
        if not self.num_classes:
            return None
        classes = jnp.asarray(self.sample_label_list or range(self.num_classes), jnp.int32)
        return classes[jnp.arange(num) % len(classes)]

    def denoiser(self, params: Any, cond: jax.Array | None, *,
                 labels: jax.Array | None = None, guidance_scale: float = 0.0):
        """`denoise_fn(z, logsnr) -> x̂0`; with labels and w = guidance_scale > 0,
        classifier-free guidance ε̃ = (1 + w)·ε(z, c) − w·ε(z, ∅) (both share `cond`)."""
        def predict(z, logsnr, lab):
            out = self.apply(params, z, logsnr, cond, labels=lab)
            return targets.predictions(z=z, model_output=out, logsnr=logsnr,
                                       parameterization=self.parameterization)

        return guidance.class_guided_denoiser(
            predict, labels, null_class=self.num_classes,
            weight=guidance_scale if self.num_classes else 0.0)

    def sample_latents(self, params: Any, rng: jax.Array, num: int, cond: jax.Array | None, *,
                       sampler: str, num_steps: int, labels: jax.Array | None = None,
                       guidance_scale: float = 0.0, **kwargs: Any) -> jax.Array:
        """Latent tokens [num, L, C] of one clip given the previous clip's (or zeros)."""
        if self.num_classes and labels is None:
            labels = self.sample_labels(num)
        denoise_fn = self.denoiser(params, cond, labels=labels, guidance_scale=guidance_scale)
        return samplers.sample(sampler=sampler, denoise_fn=denoise_fn, rng=rng,
                               shape=(num, self.num_tokens, self.latent_channels),
                               logsnr_schedule=self.schedule, num_steps=num_steps,
                               clip_x0=True, **kwargs)  # tanh-bounded latents

    def generate_long_video(self, params: Any, rng: jax.Array, num: int, num_frames: int, *,
                            sampler: str = "ddim", num_steps: int = 100,
                            labels: jax.Array | None = None, guidance_scale: float = 0.0,
                            **kwargs: Any) -> jax.Array:
        """[num, num_frames, H, W, C] in [−1, 1]: clip 1 unconditional, each next clip
        conditioned on the previous clip's latents; decoded and concatenated. A
        class-conditional model keeps each video's label (default `sample_labels`) for
        every clip."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be ≥ 1, got {num_frames}")
        clips = math.ceil(num_frames / self.clip_frames)
        if clips > 1 and not self.conditional:
            raise ConfigError("this latent model is unconditional (pvdm.cond_prob=0): it "
                              f"makes {self.clip_frames}-frame clips only")

        def one_clip(prev, clip_rng):
            cond = prev if self.conditional else None
            z = self.sample_latents(params, clip_rng, num, cond, sampler=sampler,
                                    num_steps=num_steps, labels=labels,
                                    guidance_scale=guidance_scale, **kwargs)
            return z, jnp.clip(self.decode(params, z), -1.0, 1.0)

        start = jnp.zeros((num, self.num_tokens, self.latent_channels), jnp.float32)
        _, videos = jax.lax.scan(one_clip, start, jax.random.split(rng, clips))
        videos = jnp.moveaxis(videos, 0, 1)  # [num, clips, S, H, W, C]
        return videos.reshape(num, clips * self.clip_frames, *videos.shape[3:])[:, :num_frames]

    def sample(self, params: Any, rng: jax.Array, *, num_samples: int,
               num_steps: int = 100, guidance_scale: float = 0.0, gamma: float = 0.3,
               labels: jax.Array | None = None, **unused: Any) -> jax.Array:
        """The trainer's periodic samples and the sampling evaluators: `num_frames` frames
        per video; a class-conditional model's labels default to `sample_labels(num_samples)`."""
        del unused
        sampler = self.config.pvdm.sampler
        kwargs = {"gamma": gamma} if sampler == "ancestral" else {}
        return self.generate_long_video(params, rng, num_samples, self.num_frames,
                                        sampler=sampler, num_steps=num_steps, labels=labels,
                                        guidance_scale=guidance_scale, **kwargs)


@errors.cli
def main(argv: list[str] | None = None) -> int:
    parser = errors.ArgumentParser(
        prog="python -m vdiff.methods.pvdm",
        description="Export a trained PVDM autoencoder (EMA weights + config) into a folder "
                    "that pvdm.autoencoder_workdir / the latent configs' ae= accept.")
    parser.add_argument("workdir", help="the pvdm_ae training workdir")
    parser.add_argument("out_dir", help="the folder to write (created)")
    args = parser.parse_args(argv)
    path = export_autoencoder(args.workdir, args.out_dir)
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB) and config.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
