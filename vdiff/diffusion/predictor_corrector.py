"""Predictor-corrector sampling: ancestral predictor steps, each followed by Langevin
corrections at the new noise level (Song et al. 2021; the corrector as in VDM, Ho et al.
2022)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vdiff.diffusion.ancestral_ddim import DEFAULT_GAMMA, ancestral_step
from vdiff.diffusion.sampler_loop import (
    Array, DenoiseFn, PostStepFn, Scalar, Schedule, apply_post_step, denoise_x0, run_sampler)
from vdiff.diffusion.schedules import alpha_sigma
from vdiff.diffusion.targets import bcast_right

DEFAULT_LANGEVIN_DELTA = 0.1


def langevin_corrector_step(
    *, rng: Array, z: Array, x0_hat: Array, logsnr: Array, delta: Scalar = DEFAULT_LANGEVIN_DELTA
) -> Array:
    """One Langevin correction at a fixed level λ (as in VDM, Ho et al. 2022).

    z ← z − ½ δ σ ε̂ + √δ σ ξ,  ε̂ = (z − α x̂0)/σ,  ξ ~ N(0, I).

    Since ∇_z log p_λ(z) ≈ −ε̂/σ this is the unadjusted Langevin step
    z ← z + ½ τ ∇ log p_λ(z) + √τ ξ with step τ = δ σ², i.e. the step is δ times the noise
    variance of the level (Song et al. 2021's "corrector" with a fixed relative step).
    Computed as z − ½ δ (z − α x̂0) + √δ σ ξ (no division by σ).
    """
    lam = bcast_right(jnp.asarray(logsnr, jnp.float32), ndim=jnp.ndim(z))
    alpha, sigma = alpha_sigma(logsnr=lam)
    delta = jnp.asarray(delta, jnp.float32)
    noise = jax.random.normal(rng, jnp.shape(z), jnp.float32)
    z_new = z - 0.5 * delta * (z - alpha * x0_hat) + jnp.sqrt(delta) * sigma * noise
    return z_new.astype(z.dtype)


def pc_sample(
    *,
    denoise_fn: DenoiseFn,
    rng: Array,
    shape: tuple[int, ...],
    logsnr_schedule: Schedule,
    num_steps: int | Array,
    gamma: Scalar = DEFAULT_GAMMA,
    num_corrector_steps: int | Array = 1,
    delta: Scalar = DEFAULT_LANGEVIN_DELTA,
    clip_x0: bool = False,
    dtype: jnp.dtype = jnp.float32,
    post_step_fn: PostStepFn | None = None,
) -> Array:
    """Predictor-corrector sampling; NFE = N + M (N − 1) for M = `num_corrector_steps`.

    Each update t → s is an ancestral step (predictor, :func:`ancestral_step` with `gamma`)
    followed by M Langevin corrections at the new level λ_s (:func:`langevin_corrector_step`),

        z_s ← z_s − ½ δ σ_s ε̂(z_s) + √δ σ_s ξ,   ε̂(z_s) = (z_s − α_s x̂0(z_s, λ_s)) / σ_s,

    each with a fresh denoiser call, δ = 0.1 by default (the Langevin corrector as written in
    Ho et al. 2022, *Video Diffusion Models*, where it is used for conditional sampling;
    Song et al. 2021 for the predictor-corrector scheme).  The corrector loop is a
    `lax.fori_loop`, so `denoise_fn` is traced three times (predictor, corrector, final)
    for any N and M.  `post_step_fn` runs after the predictor and after every correction.
    """

    def step(k, z, logsnr_t, logsnr_s, noise_rng, aux_rng, state):
        hook_rng, corrector_rng = jax.random.split(aux_rng)
        x0_hat = denoise_x0(denoise_fn, z, logsnr_t, clip_x0=clip_x0)
        z = ancestral_step(
            rng=noise_rng, z_t=z, x0_hat=x0_hat, logsnr_t=logsnr_t, logsnr_s=logsnr_s, gamma=gamma
        )
        z = apply_post_step(post_step_fn, z, logsnr_s, hook_rng)

        def correct(j: Array, z: Array) -> Array:
            corr_noise_rng, corr_hook_rng = jax.random.split(jax.random.fold_in(corrector_rng, j))
            x0_hat = denoise_x0(denoise_fn, z, logsnr_s, clip_x0=clip_x0)
            z = langevin_corrector_step(rng=corr_noise_rng, z=z, x0_hat=x0_hat, logsnr=logsnr_s, delta=delta)
            return apply_post_step(post_step_fn, z, logsnr_s, corr_hook_rng)

        with jax.named_scope("langevin_corrector"):
            z = jax.lax.fori_loop(0, num_corrector_steps, correct, z)
        return z, state

    return run_sampler(
        name="pc", step_fn=step, state=(), denoise_fn=denoise_fn, rng=rng, shape=shape,
        logsnr_schedule=logsnr_schedule, num_steps=num_steps, clip_x0=clip_x0, dtype=dtype,
    )
