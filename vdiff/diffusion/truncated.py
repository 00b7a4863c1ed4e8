r"""Truncated sampling: DDIM from a latent already part-way down the noise levels.

`ddim_from` starts from a latent already at some level λ_M of any grid (`logsnr_at(j)`) and
runs the DDIM updates of `ancestral_ddim.ddim_step` down to x̂0; `truncated_sample` noises
clean data to t₀ first (SDEdit / img2img, SinFusion's editing and Projector correction).
The interpolation schemes and SinFusion both use them.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from vdiff.diffusion.ancestral_ddim import ddim_step
from vdiff.diffusion.sampler_loop import (
    Array, DenoiseFn, Scalar, Schedule, check_num_steps, denoise_x0)
from vdiff.diffusion.targets import q_sample


def ddim_from(
    *,
    denoise_fn: DenoiseFn,
    z: Array,
    logsnr_at: Callable[[Array], Array],
    num_steps: int | Array,
    rng: Array | None = None,
    eta: Scalar = 0.0,
    clip_x0: bool = False,
) -> Array:
    """Truncated DDIM: from z, already at level λ_M = logsnr_at(M), M = `num_steps` ≥ 1
    (may be traced), to x̂0 in M network calls.

    Steps λ_j → λ_{j−1} (:func:`ddim_step`) for j = M, …, 2, then x̂0 = denoise_fn(z, λ_1);
    `logsnr_at(j)` takes an int32 step index j ∈ [1, M] and returns a scalar λ_j, increasing as
    j falls (a table lookup or a schedule on any grid). The noise of the step from j is
    `fold_in(rng, M − j)`; `rng` may be None for η = 0 (no noise is used).
    """
    check_num_steps(num_steps)
    rng = jax.random.key(0) if rng is None else rng
    m = jnp.asarray(num_steps, jnp.int32)

    def body(i: Array, z: Array) -> Array:
        with jax.named_scope("ddim_from_step"):
            j = m - i
            logsnr_t, logsnr_s = logsnr_at(j), logsnr_at(j - 1)
            x0_hat = denoise_x0(denoise_fn, z, logsnr_t, clip_x0=clip_x0)
            return ddim_step(rng=jax.random.fold_in(rng, i), z_t=z, x0_hat=x0_hat,
                             logsnr_t=logsnr_t, logsnr_s=logsnr_s, eta=eta)

    with jax.named_scope("ddim_from"):
        z = jax.lax.fori_loop(0, m - 1, body, z)
        return denoise_x0(denoise_fn, z, logsnr_at(jnp.int32(1)), clip_x0=clip_x0)


def truncated_sample(
    *,
    denoise_fn: DenoiseFn,
    rng: Array,
    x: Array,
    t_start: Scalar,
    logsnr_schedule: Schedule,
    num_steps: int,
    eta: Scalar = 0.0,
    clip_x0: bool = False,
) -> Array:
    """Noise x to t₀ = `t_start` ∈ [0, 1] (may be traced) and denoise from there (SDEdit /
    img2img; SinFusion's editing and Projector correction):

        z_{t₀} = α(t₀) x + σ(t₀) ε,  then :func:`ddim_from` on t_j = t₀ j / M, j = M … 1,
        M = max(1, ⌈N t₀⌉) (the step size of full N-step sampling);  t₀ = 0 returns x.

    Random streams: `noise_rng, loop_rng = split(rng)`; ε from `noise_rng`, the DDIM steps
    from `loop_rng`.
    """
    t0 = jnp.clip(jnp.asarray(t_start, jnp.float32), 0.0, 1.0)
    m = jnp.maximum(1, jnp.ceil(num_steps * t0)).astype(jnp.int32)
    mf = m.astype(jnp.float32)
    b = x.shape[0]
    noise_rng, loop_rng = jax.random.split(rng)
    with jax.named_scope("truncated_sample"):
        eps = jax.random.normal(noise_rng, x.shape, jnp.float32)
        z = q_sample(x0=x.astype(jnp.float32), eps=eps,
                     logsnr=jnp.full((b,), logsnr_schedule(t0)))
        out = ddim_from(denoise_fn=denoise_fn, z=z,
                        logsnr_at=lambda j: logsnr_schedule(t0 * j / mf), num_steps=m,
                        rng=loop_rng, eta=eta, clip_x0=clip_x0)
    return jnp.where(t0 > 0, out, x).astype(x.dtype)
