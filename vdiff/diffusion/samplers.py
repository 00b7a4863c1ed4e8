"""Samplers driven by a `denoise_fn(z, logsnr) -> x̂0` closure.

The sampler never knows which network is behind `denoise_fn`; `logsnr` is passed with the
batch shape [B].  Time runs on a uniform grid t_k = k / N from t = 1 (noise) to t = 0, and
λ(t) comes from a log-SNR schedule (see `schedules.py`).

Ancestral step t → s < t (λ_s > λ_t), with r = e^{λ_t − λ_s} = (α_t² σ_s²)/(α_s² σ_t²) ∈ (0, 1):
the forward posterior q(z_s | z_t, x) = N(μ, σ²_lo) has

    μ     = r (α_s / α_t) z_t + (1 − r) α_s x
    σ²_lo = (1 − r) σ_s²          (true posterior variance; lower bound on reverse entropy)
    σ²_hi = (1 − r) σ_t² = σ²_{t|s}  (forward transition variance; upper bound)

and the reverse step uses x = x̂0 with variance exp(γ log σ²_hi + (1 − γ) log σ²_lo)
(Nichol & Dhariwal 2021; VDM / Ho et al. 2022 treat γ as a sampling hyperparameter).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from vdiff.diffusion.targets import bcast_right

Array = jax.Array
DenoiseFn = Callable[[Array, Array], Array]
Schedule = Callable[[Array], Array]

DEFAULT_GAMMA = 0.3


def ancestral_posterior(
    *, z_t: Array, x0_hat: Array, logsnr_t: Array, logsnr_s: Array, gamma: float = DEFAULT_GAMMA
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
    gamma: float = DEFAULT_GAMMA,
) -> Array:
    """One ancestral step: z_s = μ + exp(½ log σ²) ε, ε ~ N(0, I), in z_t's dtype."""
    mean, log_var = ancestral_posterior(
        z_t=z_t, x0_hat=x0_hat, logsnr_t=logsnr_t, logsnr_s=logsnr_s, gamma=gamma
    )
    noise = jax.random.normal(rng, jnp.shape(z_t), jnp.float32)
    return (mean + jnp.exp(0.5 * log_var) * noise).astype(z_t.dtype)


def _denoise(denoise_fn: DenoiseFn, z: Array, logsnr: Array, *, clip_x0: bool) -> Array:
    """x̂0 = denoise_fn(z, λ·1_B), optionally clipped to [−1, 1]."""
    x0_hat = denoise_fn(z, jnp.full((z.shape[0],), logsnr, jnp.float32))
    return jnp.clip(x0_hat, -1.0, 1.0) if clip_x0 else x0_hat


def ancestral_sample(
    *,
    denoise_fn: DenoiseFn,
    rng: Array,
    shape: tuple[int, ...],
    logsnr_schedule: Schedule,
    num_steps: int,
    gamma: float = DEFAULT_GAMMA,
    clip_x0: bool = True,
    dtype: jnp.dtype = jnp.float32,
) -> Array:
    """Ancestral sampling from z_1 ~ N(0, I) with `num_steps` denoiser calls.

    Steps t_k → t_{k−1} (t_k = k/N) for k = N, …, 2 use :func:`ancestral_step` with
    x̂0 = denoise_fn(z_{t_k}, λ(t_k)); the last call at t_1 returns x̂0 itself (no noise).
    z_1 is drawn as N(0, I), ignoring α(1) (≈ e^{λ_min/2}).  The loop is a `lax.fori_loop`,
    so `denoise_fn` is traced once for the loop body (plus once for the final call)
    regardless of `num_steps`.  Works under `jax.jit` with the non-array arguments static.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    n = float(num_steps)
    init_rng, loop_rng = jax.random.split(rng)

    def body(k: Array, z: Array) -> Array:
        with jax.named_scope("ancestral_step"):
            t = (n - k) / n
            s = (n - k - 1) / n
            logsnr_t, logsnr_s = logsnr_schedule(t), logsnr_schedule(s)
            x0_hat = _denoise(denoise_fn, z, logsnr_t, clip_x0=clip_x0)
            return ancestral_step(
                rng=jax.random.fold_in(loop_rng, k),
                z_t=z,
                x0_hat=x0_hat,
                logsnr_t=logsnr_t,
                logsnr_s=logsnr_s,
                gamma=gamma,
            )

    with jax.named_scope("ancestral_sample"):
        z = jax.random.normal(init_rng, shape, dtype)
        z = jax.lax.fori_loop(0, num_steps - 1, body, z)
        logsnr_last = logsnr_schedule(jnp.asarray(1.0 / n, jnp.float32))
        return _denoise(denoise_fn, z, logsnr_last, clip_x0=clip_x0).astype(dtype)
