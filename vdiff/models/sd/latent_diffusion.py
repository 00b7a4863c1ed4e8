r"""A Stable-Diffusion-style latent diffusion model on vdiff's diffusion core.

SD's UNet is trained on 1000 discrete timesteps with "scaled linear" betas
(β_i = (√β₀ + (√β₁ − √β₀) i/999)², β₀ = 0.00085, β₁ = 0.012). vdiff's samplers and
guidance speak log-SNR, so `DiscreteSchedule` turns the betas into a λ table and both
directions of the map are piecewise-linear interpolations of it:

    t ∈ [0, 1]  ↦ λ(t)            (continuous schedule for the samplers; t = (i+1)/N ↔ entry i)
    λ           ↦ timestep τ(λ)   (fractional diffusers timestep fed to the UNet's embedding)

so `LatentDiffusion.denoiser(...)` is an ordinary `denoise_fn(z, logsnr) -> x̂0` and every
sampler, guidance rule and hook of `vdiff.diffusion` runs on SD models unchanged.
Latents are the VAE posterior mean (or a sample) times `scaling_factor`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vdiff.diffusion import schedules, targets
from vdiff.errors import ConfigError

Array = jax.Array
EpsFn = Callable[[Array, Array], Array]


def scaled_linear_betas(num_timesteps: int = 1000, beta_start: float = 0.00085,
                        beta_end: float = 0.012) -> np.ndarray:
    """SD's betas: linear in √β (Stable Diffusion's defaults)."""
    return schedules.scaled_linear_betas(num_timesteps=num_timesteps, beta_start=beta_start,
                                         beta_end=beta_end)


@dataclasses.dataclass(frozen=True)
class DiscreteSchedule:
    """λ table of a discrete DDPM schedule (entry i = noise level of diffusers timestep i)."""

    logsnr_table: np.ndarray  # [N], decreasing

    @classmethod
    def from_betas(cls, betas: Sequence[float]) -> "DiscreteSchedule":
        log_alpha_bar = np.cumsum(np.log1p(-np.asarray(betas, np.float64)))
        return cls(np.asarray(log_alpha_bar - np.log(-np.expm1(log_alpha_bar)), np.float32))

    @classmethod
    def from_scheduler_config(cls, cfg: dict[str, Any]) -> "DiscreteSchedule":
        """From a diffusers `scheduler_config.json` (scaled_linear or linear betas)."""
        n = int(cfg.get("num_train_timesteps", 1000))
        b0, b1 = float(cfg.get("beta_start", 0.00085)), float(cfg.get("beta_end", 0.012))
        kind = cfg.get("beta_schedule", "scaled_linear")
        if kind == "scaled_linear":
            betas = scaled_linear_betas(n, b0, b1)
        elif kind == "linear":
            betas = np.linspace(b0, b1, n, dtype=np.float64)
        else:
            raise ConfigError(f"beta_schedule {kind!r} is not supported (scaled_linear, linear)")
        return cls.from_betas(betas)

    @property
    def num_timesteps(self) -> int:
        return len(self.logsnr_table)

    def logsnr(self, t: Array) -> Array:
        """Continuous schedule t ∈ [0, 1] → λ; t = (i + 1)/N gives table entry i."""
        n = self.num_timesteps
        idx = jnp.clip(jnp.asarray(t, jnp.float32) * n - 1.0, 0.0, n - 1.0)
        return _lerp_table(jnp.asarray(self.logsnr_table), idx)

    def timestep(self, logsnr: Array) -> Array:
        """λ → fractional diffusers timestep in [0, N − 1] (inverse of the table)."""
        table = jnp.asarray(self.logsnr_table)[::-1]  # increasing
        x = jnp.clip(jnp.asarray(logsnr, jnp.float32), table[0], table[-1])
        # 'compare_all', not jnp.interp's default search: that search is a while loop, and
        # nested in a sampler's loop XLA:GPU (jax 0.11) failed to compile it.
        i = jnp.clip(jnp.searchsorted(table, x, method="compare_all") - 1, 0, len(table) - 2)
        lo, hi = table[i], table[i + 1]
        frac = (x - lo) / jnp.maximum(hi - lo, 1e-12)
        return (self.num_timesteps - 1) - (i + frac)

    def t_of_timestep(self, timestep: Array) -> Array:
        """Diffusers timestep i → continuous t = (i + 1)/N."""
        return (jnp.asarray(timestep, jnp.float32) + 1.0) / self.num_timesteps


def _lerp_table(table: Array, idx: Array) -> Array:
    """table at fractional index idx ∈ [0, len − 1], linearly interpolated (no search)."""
    i0 = jnp.clip(jnp.floor(idx), 0, table.shape[0] - 2).astype(jnp.int32)
    frac = idx - i0
    return table[i0] * (1.0 - frac) + table[i0 + 1] * frac


@dataclasses.dataclass
class LatentDiffusion:
    """UNet + VAE (+ optional text encoder) with SD's schedule, as vdiff closures.

    unet_apply(params, z, timesteps, context, **extra) → network output; by default the
    `UNet2DConditionModel`'s apply, but wrappers (DreamPose's pose channels, ControlNet
    residuals) pass their own.
    """

    unet: Any
    unet_params: Any
    vae: Any
    vae_params: Any
    schedule: DiscreteSchedule
    prediction_type: str = "epsilon"
    scaling_factor: float = 0.18215
    text_encoder: Any = None
    text_params: Any = None

    def __post_init__(self):
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ConfigError(f"prediction_type {self.prediction_type!r} is not supported "
                              "(epsilon, v_prediction)")

    # ------------------------------------------------------------------ latents
    def encode(self, images: Array, rng: Array | None = None) -> Array:
        """Images [B, H, W, 3] in [−1, 1] → scaled latents (posterior mean unless rng)."""
        from vdiff.models.sd.vae import sample_latent

        mean, logvar = self.vae.apply({"params": self.vae_params}, images,
                                      method=self.vae.encode)
        z = mean if rng is None else sample_latent(rng, mean, logvar)
        return z * self.scaling_factor

    def decode(self, latents: Array) -> Array:
        """Scaled latents → images in [−1, 1] (clipped)."""
        x = self.vae.apply({"params": self.vae_params}, latents / self.scaling_factor,
                           method=self.vae.decode)
        return jnp.clip(x, -1.0, 1.0)

    # ------------------------------------------------------------------ network
    def network(self, z: Array, logsnr: Array, context: Array, *, params: Any = None,
                **unet_kwargs: Any) -> Array:
        """Raw UNet output at noise level λ (timestep τ(λ))."""
        params = self.unet_params if params is None else params
        timesteps = self.schedule.timestep(jnp.broadcast_to(logsnr, z.shape[:1]))
        return self.unet.apply({"params": params}, z, timesteps, context, **unet_kwargs)

    def eps_fn(self, context: Array, *, params: Any = None, **unet_kwargs: Any) -> EpsFn:
        """(z, λ) ↦ ε̂ for one conditioning context (for `guidance.guided_denoiser`)."""

        def eps(z: Array, logsnr: Array) -> Array:
            out = self.network(z, logsnr, context, params=params, **unet_kwargs)
            if self.prediction_type == "v_prediction":
                out = targets.eps_from_v(z=z, v=out, logsnr=logsnr)
            return out.astype(z.dtype)

        return eps

    def denoiser(self, context: Array, *, params: Any = None, **unet_kwargs: Any):
        """(z, λ) ↦ x̂0: the samplers' `denoise_fn`."""
        eps = self.eps_fn(context, params=params, **unet_kwargs)
        return lambda z, logsnr: targets.x0_from_eps(z=z, eps=eps(z, logsnr), logsnr=logsnr)

    def training_target(self, x0: Array, eps: Array, logsnr: Array) -> Array:
        """What the network regresses onto (ε or v), for finetuning."""
        if self.prediction_type == "v_prediction":
            return targets.v_from(x0=x0, eps=eps, logsnr=logsnr)
        return eps


def load_scheduler_config(root: str) -> dict[str, Any]:
    path = os.path.join(root, "scheduler", "scheduler_config.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def load_stable_diffusion(root: str, *, dtype: Any = jnp.float32,
                          attention_impl: str | None = None, remat: bool = False,
                          text_encoder: bool = True) -> LatentDiffusion:
    """A diffusers-layout SD folder (unet/, vae/, [text_encoder/], [scheduler/]) → model."""
    from vdiff.models.sd.unet import load_unet
    from vdiff.models.sd.vae import load_vae

    if not os.path.isdir(root):
        raise ConfigError(f"Stable Diffusion folder not found: {root}. Pass a diffusers-layout "
                          "folder with unet/ and vae/ (see README, 'Stable Diffusion weights').")
    for part in ("unet", "vae"):
        if not os.path.isdir(os.path.join(root, part)):
            raise ConfigError(f"{root} has no {part}/ folder; a diffusers-layout Stable "
                              "Diffusion folder has unet/, vae/, text_encoder/, scheduler/")
    unet, unet_params = load_unet(os.path.join(root, "unet"), dtype=dtype,
                                  attention_impl=attention_impl, remat=remat)
    vae, vae_params = load_vae(os.path.join(root, "vae"), dtype=dtype)
    sched_cfg = load_scheduler_config(root)
    text, text_params = None, None
    if text_encoder and os.path.isdir(os.path.join(root, "text_encoder")):
        from vdiff.models.sd.clip import load_clip_text
        text, text_params = load_clip_text(os.path.join(root, "text_encoder"), dtype=dtype,
                                           attention_impl=attention_impl)
    return LatentDiffusion(
        unet=unet, unet_params=unet_params, vae=vae, vae_params=vae_params,
        schedule=DiscreteSchedule.from_scheduler_config(sched_cfg),
        prediction_type=sched_cfg.get("prediction_type", "epsilon"),
        scaling_factor=float(vae.config.scaling_factor), text_encoder=text,
        text_params=text_params)
