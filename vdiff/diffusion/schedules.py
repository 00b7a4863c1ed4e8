"""Noise schedules expressed as log-SNR.

Conventions (variance preserving)::

    λ = log SNR = log(α² / σ²),   α² = sigmoid(λ),   σ² = sigmoid(−λ),   α² + σ² = 1.

Time t ∈ [0, 1] runs from clean data (t = 0, λ = λ_max) to noise (t = 1, λ = λ_min) and
λ(t) is non-increasing.  Every continuous schedule below maps t (any shape) to λ of the same
shape and is clipped to [logsnr_min, logsnr_max], so t ∈ {0, 1} never gives nan or inf.

Discrete DDPM schedules are turned into log-SNR tables by :func:`ddpm_logsnr_table`.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Schedule = Callable[[Array], Array]


def alpha_sigma(*, logsnr: Array) -> tuple[Array, Array]:
    """Signal and noise scales of a VP process.

    α = sqrt(sigmoid(λ)), σ = sqrt(sigmoid(−λ)), computed as exp(½ log_sigmoid(±λ)) so
    that neither underflows to an exact zero for |λ| ≲ 170.
    """
    logsnr = jnp.asarray(logsnr)
    alpha = jnp.exp(0.5 * jax.nn.log_sigmoid(logsnr))
    sigma = jnp.exp(0.5 * jax.nn.log_sigmoid(-logsnr))
    return alpha, sigma


def logsnr_from_log_alpha_bar(log_alpha_bar: Array) -> Array:
    """λ = log ᾱ − log(1 − ᾱ) from log ᾱ, with 1 − ᾱ = −expm1(log ᾱ) (no cancellation)."""
    return log_alpha_bar - jnp.log(-jnp.expm1(log_alpha_bar))


def _clamp_log_alpha_bar(log_alpha_bar: Array, *, logsnr_min: float, logsnr_max: float) -> Array:
    """Clamp log ᾱ to [log σ(λ_min), log σ(λ_max)] so the derived λ lies in [λ_min, λ_max].

    ᾱ = sigmoid(λ) is increasing in λ, so clamping before the (singular) conversion keeps
    the result and its gradient finite at ᾱ ∈ {0, 1}.
    """
    lo = jax.nn.log_sigmoid(jnp.asarray(logsnr_min, jnp.float32))
    hi = jax.nn.log_sigmoid(jnp.asarray(logsnr_max, jnp.float32))
    return jnp.clip(log_alpha_bar, lo, hi)


def logsnr_cosine(t: Array, *, logsnr_min: float = -20.0, logsnr_max: float = 20.0) -> Array:
    """Cosine schedule, λ(t) = −2 log tan(a t + b).

    b = arctan(exp(−λ_max / 2)),  a = arctan(exp(−λ_min / 2)) − b,
    so λ(0) = λ_max and λ(1) = λ_min exactly (the truncation is built into a, b).
    For t ≥ ½ it is evaluated as 2 log tan(a (1 − t) + d), d = π/2 − a − b = arctan(e^{λ_min/2}),
    which avoids float32 cancellation next to π/2.
    Without truncation (a = π/2, b = 0) this is α = cos(πt/2), σ = sin(πt/2).
    """
    t = jnp.asarray(t, jnp.float32)
    b = math.atan(math.exp(-0.5 * logsnr_max))
    d = math.atan(math.exp(0.5 * logsnr_min))  # = π/2 − a − b, the angle left at t = 1
    a = 0.5 * math.pi - b - d
    # tan θ = 1 / tan(π/2 − θ): evaluate the small angle on each half for float32 accuracy.
    near_zero = -2.0 * jnp.log(jnp.tan(a * t + b))
    near_one = 2.0 * jnp.log(jnp.tan(a * (1.0 - t) + d))
    logsnr = jnp.where(t < 0.5, near_zero, near_one)
    return jnp.clip(logsnr, logsnr_min, logsnr_max)


def logsnr_shifted_cosine(
    t: Array,
    *,
    image_size: int,
    base_size: int = 64,
    logsnr_min: float = -20.0,
    logsnr_max: float = 20.0,
) -> Array:
    """Resolution-shifted cosine (Hoogeboom et al. 2023, *simple diffusion*).

    λ(t) = λ_cos(t) + 2 log(base_size / image_size), clipped to [λ_min, λ_max].

    The underlying cosine is truncated to [λ_min − shift, λ_max − shift], i.e. it is the part
    of the shifted curve that lies inside [λ_min, λ_max] spread over all of t ∈ [0, 1]: the
    endpoints stay exactly λ(0) = λ_max, λ(1) = λ_min and no sampling steps are wasted on a
    flat clipped stretch.  In the interior this agrees with the paper's "shift a [−15, 15]
    cosine" to within a reparametrisation of t of order exp(−|λ_lim| / 2).
    """
    shift = 2.0 * math.log(base_size / image_size)
    base = logsnr_cosine(t, logsnr_min=logsnr_min - shift, logsnr_max=logsnr_max - shift)
    return jnp.clip(base + shift, logsnr_min, logsnr_max)


def logsnr_linear_beta(
    t: Array,
    *,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    num_timesteps: int = 1000,
    logsnr_min: float = -20.0,
    logsnr_max: float = 20.0,
) -> Array:
    """Continuous-time DDPM linear-β schedule (Ho et al. 2020 with N steps).

    β(τ) = β₀ + (β₁ − β₀) τ per step, N steps per unit time, so
    log ᾱ(t) = −∫₀ᵗ N β(τ) dτ = −(β₀ N t + ½ (β₁ − β₀) N t²),
    λ(t) = log ᾱ − log(1 − ᾱ), clipped (λ(0) = +∞ before clipping).
    """
    t = jnp.asarray(t, jnp.float32)
    n = float(num_timesteps)
    log_alpha_bar = -(beta_start * n * t + 0.5 * (beta_end - beta_start) * n * t**2)
    log_alpha_bar = _clamp_log_alpha_bar(log_alpha_bar, logsnr_min=logsnr_min, logsnr_max=logsnr_max)
    return jnp.clip(logsnr_from_log_alpha_bar(log_alpha_bar), logsnr_min, logsnr_max)


def logsnr_scaled_linear_beta(
    t: Array,
    *,
    beta_start: float = 0.0015,
    beta_end: float = 0.0195,
    num_timesteps: int = 1000,
    logsnr_min: float = -20.0,
    logsnr_max: float = 20.0,
) -> Array:
    """Continuous-time latent-diffusion schedule: β linear in √β (LDM's "linear" betas).

    The defaults are PVDM's latent-diffusion config (β from 0.0015 to 0.0195 over 1,000 steps,
    terminal λ ≈ −8.8; Stable Diffusion's 0.00085 to 0.012 ends at λ ≈ −5.4).  With
    √β(τ) = a + (b − a) τ, a = √β₀, b = √β₁, and N steps per unit time,
    log ᾱ(t) = −N ∫₀ᵗ β(τ) dτ = −N (a² t + a (b − a) t² + (b − a)² t³ / 3).
    """
    t = jnp.asarray(t, jnp.float32)
    a, b, n = math.sqrt(beta_start), math.sqrt(beta_end), float(num_timesteps)
    log_alpha_bar = -n * (a * a * t + a * (b - a) * t**2 + (b - a) ** 2 * t**3 / 3.0)
    log_alpha_bar = _clamp_log_alpha_bar(log_alpha_bar, logsnr_min=logsnr_min, logsnr_max=logsnr_max)
    return jnp.clip(logsnr_from_log_alpha_bar(log_alpha_bar), logsnr_min, logsnr_max)


def _safe_log(x: Array, tiny: float = 1e-30) -> Array:
    return jnp.log(jnp.maximum(x, tiny))


def logsnr_cosine_beta(
    t: Array, *, s: float = 0.008, logsnr_min: float = -20.0, logsnr_max: float = 20.0
) -> Array:
    """Nichol & Dhariwal (2021) cosine ᾱ as log-SNR.

    ᾱ(t) = cos²(f(t)) / cos²(f(0)),  f(t) = ((t + s)/(1 + s)) π/2.
    Using cos²f₀ − cos²f = sin(f − f₀) sin(f + f₀):
    λ(t) = 2 log cos f − log sin(f − f₀) − log sin(f + f₀),
    with cos f = sin(((1 − t)/(1 + s)) π/2) so that t = 1 gives exactly 0 (λ → −∞ → λ_min)
    and t = 0 gives sin(f − f₀) = 0 (λ → +∞ → λ_max); the logs are guarded, then clipped.
    """
    t = jnp.asarray(t, jnp.float32)
    half_pi = 0.5 * math.pi
    cos_f = jnp.sin((1.0 - t) / (1.0 + s) * half_pi)
    sin_diff = jnp.sin(t / (1.0 + s) * half_pi)
    sin_sum = jnp.sin((t + 2.0 * s) / (1.0 + s) * half_pi)
    logsnr = 2.0 * _safe_log(cos_f) - _safe_log(sin_diff) - _safe_log(sin_sum)
    return jnp.clip(logsnr, logsnr_min, logsnr_max)


def linear_betas(*, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Array:
    """DDPM linear betas: β_i = β₀ + (β₁ − β₀) i / (N − 1), i = 0..N−1."""
    return jnp.linspace(beta_start, beta_end, num_timesteps, dtype=jnp.float32)


def scaled_linear_betas(*, num_timesteps: int = 1000, beta_start: float = 0.0015,
                        beta_end: float = 0.0195) -> np.ndarray:
    """Latent-diffusion betas, linear in √β (float64; defaults as :func:`logsnr_scaled_linear_beta`)."""
    return np.linspace(beta_start ** 0.5, beta_end ** 0.5, num_timesteps, dtype=np.float64) ** 2


def cosine_betas(*, num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Array:
    """Nichol & Dhariwal betas: β_i = min(1 − ᾱ((i+1)/N) / ᾱ(i/N), max_beta).

    ᾱ(t) ∝ cos²(((t + s)/(1 + s)) π/2); the cap avoids β = 1 at the last step.
    """
    t = jnp.arange(num_timesteps + 1, dtype=jnp.float32) / num_timesteps
    f = jnp.cos((t + s) / (1.0 + s) * 0.5 * math.pi) ** 2
    return jnp.minimum(1.0 - f[1:] / f[:-1], max_beta)


def ddpm_logsnr_table(*, betas: Array) -> Array:
    """Discrete DDPM schedule as a log-SNR table.

    ᾱ_i = ∏_{j ≤ i} (1 − β_j) (accumulated as Σ log1p(−β_j)), λ_i = log(ᾱ_i / (1 − ᾱ_i)).
    Entry i (0-based) is the noise level after i + 1 steps, i.e. continuous t = (i + 1)/N.
    """
    log_alpha_bar = jnp.cumsum(jnp.log1p(-jnp.asarray(betas, jnp.float32)))
    return logsnr_from_log_alpha_bar(log_alpha_bar)


def _schedule_registry() -> dict[str, Callable[..., Array]]:
    return {
        "cosine": logsnr_cosine,
        "shifted_cosine": logsnr_shifted_cosine,
        "linear_beta": logsnr_linear_beta,
        "scaled_linear_beta": logsnr_scaled_linear_beta,
        "cosine_beta": logsnr_cosine_beta,
    }


def schedule_names() -> tuple[str, ...]:
    """Names accepted by :func:`get_schedule`."""
    return tuple(sorted(_schedule_registry()))


def get_schedule(name: str, **kwargs) -> Schedule:
    """Look up a continuous schedule by name and bind its keyword arguments: t ↦ λ(t)."""
    registry = _schedule_registry()
    if name not in registry:
        raise ValueError(f"Unknown logsnr schedule {name!r}; known: {sorted(registry)}")
    return functools.partial(registry[name], **kwargs)
