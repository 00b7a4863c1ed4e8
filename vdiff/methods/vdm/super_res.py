"""Cascaded spatial super-resolution for VDM (Ho et al. 2022, sec. 3/4; Ho et al. 2021, CDM).

The registered method 'vdm_sr': the same UNet and the same train_step as VDM; the
network additionally sees the low-resolution video — the clean frames average-pooled by
`config.sr.factor`, then upsampled back (nearest) — concatenated to z along channels.
During training the conditioning is corrupted with Gaussian noise of std
~ U[0, sr.cond_noise_max] (conditioning augmentation), which makes the stage robust to the
artefacts of the stage that feeds it; sampling uses `sr.sample_cond_noise`.
"""

from __future__ import annotations

from typing import Any

import einops
import jax
import jax.numpy as jnp

from vdiff.diffusion import guidance, samplers
from vdiff.errors import ConfigError
from vdiff.methods.vdm.method import VDM


def upsample_nearest(low: jax.Array, factor: int) -> jax.Array:
    """[B, T, h, w, C] → [B, T, h·f, w·f, C] by repetition."""
    return einops.repeat(low, "b t h w c -> b t (h p) (w q) c", p=factor, q=factor)


class VDMSuperRes(VDM):
    """VDM conditioned on a `factor`× downsampled copy of its own frames."""

    applications = {"super_resolve": "vdiff.sampling:cascade_super_resolve"}
    application_hint = "vdm_sr is a super-resolution stage: use --application=super_resolve"
    evaluators = ("fvd",)

    def __init__(self, config: Any):
        super().__init__(config)
        self.factor = int(config.sr.factor)
        if self.factor < 2 or config.data.resolution % self.factor:
            raise ConfigError(f"sr.factor={self.factor} must be ≥ 2 and divide "
                              f"data.resolution={config.data.resolution}")
        self.downsample = guidance.downsample_observe_fn(self.factor)

    def conditioning(self, x0: jax.Array, rng: jax.Array | None) -> jax.Array:
        cond = upsample_nearest(self.downsample(x0), self.factor)
        max_std = float(self.config.sr.cond_noise_max)
        if rng is not None and max_std > 0:
            k_std, k_noise = jax.random.split(jax.random.fold_in(rng, 7))
            std = jax.random.uniform(k_std, (x0.shape[0], 1, 1, 1, 1), maxval=max_std)
            cond = cond + std * jax.random.normal(k_noise, cond.shape)
        return cond

    def upsample(self, params: Any, rng: jax.Array, low_res: jax.Array, *,
                 labels: jax.Array | None = None, sampler: str = "ancestral",
                 num_steps: int = 128, guidance_scale: float = 0.0,
                 **sampler_kwargs: Any) -> jax.Array:
        """High-resolution videos [N, T, H, W, C] in [−1, 1] for low-res [N, T, H/f, W/f, C]."""
        n, t, h, w, c = low_res.shape
        cond = upsample_nearest(low_res, self.factor)
        std = float(self.config.sr.sample_cond_noise)
        if std > 0:
            cond = cond + std * jax.random.normal(jax.random.fold_in(rng, 7), cond.shape)
        if self.num_classes and labels is None:
            labels = jnp.arange(n, dtype=jnp.int32) % self.num_classes
        fn = self.denoiser(params, labels=labels, guidance_scale=guidance_scale, cond=cond)
        return samplers.sample(sampler=sampler, denoise_fn=fn, rng=rng,
                               shape=(n, t, h * self.factor, w * self.factor, c),
                               logsnr_schedule=self.schedule, num_steps=num_steps,
                               **{"clip_x0": True, **sampler_kwargs})

    def sample(self, params: Any, rng: jax.Array, *, num_samples: int,
               labels: jax.Array | None = None, num_steps: int = 128,
               guidance_scale: float = 0.0, gamma: float = 0.3) -> jax.Array:
        """Periodic training samples: super-resolve a downsampled pattern of the model's size.

        Without a base model in the loop, the trainer's periodic samples upsample a fixed,
        smooth synthetic low-resolution input (moving Gaussian blobs), which shows whether the
        stage adds plausible detail. Real inputs go through `upsample`.
        """
        d = self.config.data
        r = d.resolution // self.factor
        t = jnp.arange(d.num_frames)[:, None, None]
        yy, xx = jnp.mgrid[:r, :r]
        cy = r / 2 + (r / 4) * jnp.sin(0.5 * t + jnp.arange(num_samples)[:, None, None, None])
        blob = jnp.exp(-((yy - cy) ** 2 + (xx - r / 2) ** 2) / (0.05 * r * r))
        low = (2 * blob - 1)[..., None].repeat(self.channels, -1)
        return self.upsample(params, rng, low, labels=labels, num_steps=num_steps,
                             guidance_scale=guidance_scale, gamma=gamma)
