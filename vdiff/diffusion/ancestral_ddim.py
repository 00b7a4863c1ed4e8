r"""Ancestral and DDIM sampling: their single steps and their full samplers.

Ancestral step t → s < t (λ_s > λ_t), with r = e^{λ_t − λ_s} = (α_t² σ_s²)/(α_s² σ_t²) ∈ (0, 1)
---------------------------------------------------------------------------------------------
The forward posterior q(z_s | z_t, x) = N(μ, σ²_lo) has

    μ     = r (α_s / α_t) z_t + (1 − r) α_s x
    σ²_lo = (1 − r) σ_s²          (true posterior variance; lower bound on reverse entropy)
    σ²_hi = (1 − r) σ_t² = σ²_{t|s}  (forward transition variance; upper bound)

and the reverse step uses x = x̂0 with variance exp(γ log σ²_hi + (1 − γ) log σ²_lo)
(Nichol & Dhariwal 2021; VDM / Ho et al. 2022 treat γ as a sampling hyperparameter).

DDIM (:func:`ddim_step`) is the same family with its noise scaled by η: η = 1 is the
ancestral step with γ = 0, η = 0 the deterministic probability-flow step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vdiff.diffusion.sampler_loop import (
    Array, DenoiseFn, PostStepFn, Scalar, Schedule, apply_post_step, denoise_x0, run_sampler)
from vdiff.diffusion.targets import bcast_right

DEFAULT_GAMMA = 0.3


def ancestral_posterior(
    *, z_t: Array, x0_hat: Array, logsnr_t: Array, logsnr_s: Array, gamma: Scalar = DEFAULT_GAMMA
) -> tuple[Array, Array]:
    """Mean and log-variance of the ancestral step z_t → z_s (λ_s > λ_t); see module docstring.

    Computed in log space: 1 − r = −expm1(λ_t − λ_s), log σ² = log_sigmoid(−λ),
    α_s/α_t = exp(½(log_sigmoid(λ_s) − log_sigmoid(λ_t))).  Returns (μ, log σ²) broadcast
    to z_t's shape.
    """
    ndim = jnp.ndim(z_t)
    lt = bcast_right(jnp.asarray(logsnr_t, jnp.float32), ndim=ndim)
    ls = bcast_right(jnp.asarray(logsnr_s, jnp.float32), ndim=ndim)
    delta = lt - ls
    r = jnp.exp(delta)
    one_minus_r = -jnp.expm1(delta)
    log_sig2_t = jax.nn.log_sigmoid(-lt)
    log_sig2_s = jax.nn.log_sigmoid(-ls)
    alpha_s = jnp.exp(0.5 * jax.nn.log_sigmoid(ls))
    alpha_ratio = jnp.exp(0.5 * (jax.nn.log_sigmoid(ls) - jax.nn.log_sigmoid(lt)))
    mean = r * alpha_ratio * z_t + one_minus_r * alpha_s * x0_hat
    log_var = jnp.log(one_minus_r) + gamma * log_sig2_t + (1.0 - gamma) * log_sig2_s
    return mean, jnp.broadcast_to(log_var, jnp.shape(mean))


def ancestral_step(
    *,
    rng: Array,
    z_t: Array,
    x0_hat: Array,
    logsnr_t: Array,
    logsnr_s: Array,
    gamma: Scalar = DEFAULT_GAMMA,
) -> Array:
    """One ancestral step: z_s = μ + exp(½ log σ²) ε, ε ~ N(0, I), in z_t's dtype."""
    mean, log_var = ancestral_posterior(
        z_t=z_t, x0_hat=x0_hat, logsnr_t=logsnr_t, logsnr_s=logsnr_s, gamma=gamma
    )
    noise = jax.random.normal(rng, jnp.shape(z_t), jnp.float32)
    return (mean + jnp.exp(0.5 * log_var) * noise).astype(z_t.dtype)


def ddim_step(
    *,
    rng: Array,
    z_t: Array,
    x0_hat: Array,
    logsnr_t: Array,
    logsnr_s: Array,
    eta: Scalar = 0.0,
) -> Array:
    """One DDIM step z_t → z_s (Song et al. 2021), λ_s > λ_t.

    z_s = α_s x̂0 + sqrt(σ_s² − c²) ε̂ + c ξ,  ε̂ = (z_t − α_t x̂0)/σ_t,  c² = η² (1 − r) σ_s²,

    with r = e^{λ_t − λ_s}: c² is η² times the posterior variance σ²_lo, so η = 0 is the
    deterministic DDIM / probability-flow step and η = 1 is exactly the ancestral step with
    γ = 0.  Written without dividing by σ_t: with e^{−h} = √r (h = (λ_s − λ_t)/2) and
    ρ = sqrt(1 − η²(1 − r)),

        z_s = ρ (σ_s/σ_t) z_t + α_s (1 − ρ√r) x̂0 + c ξ,
        1 − ρ√r = (1 − r)(1 + η² r) / (1 + ρ√r)      (no cancellation as h → 0).
    """
    ndim = jnp.ndim(z_t)
    lt = bcast_right(jnp.asarray(logsnr_t, jnp.float32), ndim=ndim)
    ls = bcast_right(jnp.asarray(logsnr_s, jnp.float32), ndim=ndim)
    eta2 = jnp.square(jnp.asarray(eta, jnp.float32))
    r = jnp.exp(lt - ls)
    one_minus_r = -jnp.expm1(lt - ls)
    rho = jnp.sqrt(1.0 - eta2 * one_minus_r)
    sigma_ratio = jnp.exp(0.5 * (jax.nn.log_sigmoid(-ls) - jax.nn.log_sigmoid(-lt)))
    alpha_s = jnp.exp(0.5 * jax.nn.log_sigmoid(ls))
    coef_x = alpha_s * one_minus_r * (1.0 + eta2 * r) / (1.0 + rho * jnp.sqrt(r))
    std = jnp.sqrt(eta2 * one_minus_r) * jnp.exp(0.5 * jax.nn.log_sigmoid(-ls))
    noise = jax.random.normal(rng, jnp.shape(z_t), jnp.float32)
    z_s = rho * sigma_ratio * z_t + coef_x * x0_hat + std * noise
    return z_s.astype(z_t.dtype)


def ancestral_sample(
    *,
    denoise_fn: DenoiseFn,
    rng: Array,
    shape: tuple[int, ...],
    logsnr_schedule: Schedule,
    num_steps: int | Array,
    gamma: Scalar = DEFAULT_GAMMA,
    clip_x0: bool = False,
    dtype: jnp.dtype = jnp.float32,
    post_step_fn: PostStepFn | None = None,
) -> Array:
    """Ancestral sampling from z_1 ~ N(0, I); NFE = N.

    Steps t_k → t_{k−1} (t_k = k/N) for k = N, …, 2 use :func:`ancestral_step` with
    x̂0 = denoise_fn(z_{t_k}, λ(t_k)); the last call at t_1 returns x̂0 itself (no noise).
    `denoise_fn` is traced twice (loop body + final call) regardless of `num_steps`.
    `clip_x0` defaults to False as in every sampler here: clipping x̂0 to [−1, 1] is only
    right for data known to lie there (pixels), so pixel-space callers pass True; latents
    (e.g. Stable Diffusion's, std ≈ 1) must not be clipped.
    """

    def step(k, z, logsnr_t, logsnr_s, noise_rng, aux_rng, state):
        x0_hat = denoise_x0(denoise_fn, z, logsnr_t, clip_x0=clip_x0)
        z = ancestral_step(
            rng=noise_rng, z_t=z, x0_hat=x0_hat, logsnr_t=logsnr_t, logsnr_s=logsnr_s, gamma=gamma
        )
        return apply_post_step(post_step_fn, z, logsnr_s, aux_rng), state

    return run_sampler(
        name="ancestral", step_fn=step, state=(), denoise_fn=denoise_fn, rng=rng, shape=shape,
        logsnr_schedule=logsnr_schedule, num_steps=num_steps, clip_x0=clip_x0, dtype=dtype,
    )


def ddim_sample(
    *,
    denoise_fn: DenoiseFn,
    rng: Array,
    shape: tuple[int, ...],
    logsnr_schedule: Schedule,
    num_steps: int | Array,
    eta: Scalar = 0.0,
    clip_x0: bool = False,
    dtype: jnp.dtype = jnp.float32,
    post_step_fn: PostStepFn | None = None,
) -> Array:
    """DDIM sampling (:func:`ddim_step`); NFE = N.

    η = 0: deterministic given z_1 (first-order solver of the probability-flow ODE, i.e.
    DPM-Solver-1).  η = 1: the same chain as :func:`ancestral_sample` with γ = 0, and with the
    same `rng` the same samples up to float round-off.
    """

    def step(k, z, logsnr_t, logsnr_s, noise_rng, aux_rng, state):
        x0_hat = denoise_x0(denoise_fn, z, logsnr_t, clip_x0=clip_x0)
        z = ddim_step(rng=noise_rng, z_t=z, x0_hat=x0_hat, logsnr_t=logsnr_t, logsnr_s=logsnr_s, eta=eta)
        return apply_post_step(post_step_fn, z, logsnr_s, aux_rng), state

    return run_sampler(
        name="ddim", step_fn=step, state=(), denoise_fn=denoise_fn, rng=rng, shape=shape,
        logsnr_schedule=logsnr_schedule, num_steps=num_steps, clip_x0=clip_x0, dtype=dtype,
    )
