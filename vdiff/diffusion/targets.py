"""Forward process and conversions between the ε, x0 and v parameterisations.

With α² = sigmoid(λ), σ² = sigmoid(−λ) (so α² + σ² = 1)::

    z  = α x0 + σ ε                    (q(z_t | x0) = N(α x0, σ² I))
    v  = α ε − σ x0                    (Salimans & Ho 2022)
    x0 = (z − σ ε) / α = α z − σ v
    ε  = (z − α x0) / σ = σ z + α v

The v-forms are well conditioned at every λ; the ε→x0 form divides by α (ill conditioned
at very low λ) and x0→ε divides by σ (ill conditioned at very high λ).

`logsnr` has the batch shape (e.g. [B]) and is broadcast against data [B, ...] by
appending trailing singleton axes (:func:`bcast_right`).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from vdiff.diffusion.schedules import alpha_sigma

Array = jax.Array
Parameterization = Literal["eps", "x0", "v"]
PARAMETERIZATIONS: tuple[str, ...] = ("eps", "x0", "v")


def bcast_right(x: Array, *, ndim: int) -> Array:
    """Append trailing singleton axes so `x` (shape [B] or []) broadcasts against rank-`ndim` data."""
    x = jnp.asarray(x)
    if x.ndim > ndim:
        raise ValueError(f"cannot broadcast rank-{x.ndim} array against rank-{ndim} data")
    return x.reshape(x.shape + (1,) * (ndim - x.ndim))


def _alpha_sigma_like(logsnr: Array, data: Array) -> tuple[Array, Array]:
    alpha, sigma = alpha_sigma(logsnr=bcast_right(logsnr, ndim=jnp.ndim(data)))
    return alpha.astype(data.dtype), sigma.astype(data.dtype)


def check_parameterization(parameterization: str) -> None:
    """Raise ValueError unless `parameterization` is one of 'eps', 'x0', 'v'."""
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"Unknown parameterization {parameterization!r}; known: {list(PARAMETERIZATIONS)}")


def q_sample(*, x0: Array, eps: Array, logsnr: Array) -> Array:
    """Sample q(z_t | x0): z = α x0 + σ ε."""
    alpha, sigma = _alpha_sigma_like(logsnr, x0)
    return alpha * x0 + sigma * eps


def v_from(*, x0: Array, eps: Array, logsnr: Array) -> Array:
    """Velocity target v = α ε − σ x0 (= dz/dφ for α = cos φ, σ = sin φ)."""
    alpha, sigma = _alpha_sigma_like(logsnr, x0)
    return alpha * eps - sigma * x0


def x0_from_eps(*, z: Array, eps: Array, logsnr: Array) -> Array:
    """x0 = (z − σ ε) / α."""
    alpha, sigma = _alpha_sigma_like(logsnr, z)
    return (z - sigma * eps) / alpha


def eps_from_x0(*, z: Array, x0: Array, logsnr: Array) -> Array:
    """ε = (z − α x0) / σ."""
    alpha, sigma = _alpha_sigma_like(logsnr, z)
    return (z - alpha * x0) / sigma


def x0_from_v(*, z: Array, v: Array, logsnr: Array) -> Array:
    """x0 = α z − σ v (since α z − σ v = (α² + σ²) x0)."""
    alpha, sigma = _alpha_sigma_like(logsnr, z)
    return alpha * z - sigma * v


def eps_from_v(*, z: Array, v: Array, logsnr: Array) -> Array:
    """ε = σ z + α v (since σ z + α v = (σ² + α²) ε)."""
    alpha, sigma = _alpha_sigma_like(logsnr, z)
    return sigma * z + alpha * v


def predictions(
    *, z: Array, model_output: Array, logsnr: Array, parameterization: Parameterization
) -> tuple[Array, Array]:
    """Turn a network output into (x̂0, ε̂), both consistent with z = α x̂0 + σ ε̂.

    eps: ε̂ = out, x̂0 = (z − σ ε̂)/α;  x0: x̂0 = out, ε̂ = (z − α x̂0)/σ;
    v:   x̂0 = α z − σ v̂, ε̂ = σ z + α v̂.
    """
    check_parameterization(parameterization)
    if parameterization == "eps":
        return x0_from_eps(z=z, eps=model_output, logsnr=logsnr), model_output
    if parameterization == "x0":
        return model_output, eps_from_x0(z=z, x0=model_output, logsnr=logsnr)
    return x0_from_v(z=z, v=model_output, logsnr=logsnr), eps_from_v(z=z, v=model_output, logsnr=logsnr)


def target(*, x0: Array, eps: Array, logsnr: Array, parameterization: Parameterization) -> Array:
    """What a network in `parameterization` should output: ε, x0 or v = α ε − σ x0."""
    check_parameterization(parameterization)
    if parameterization == "eps":
        return eps
    if parameterization == "x0":
        return x0
    return v_from(x0=x0, eps=eps, logsnr=logsnr)
