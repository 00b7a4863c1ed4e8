r"""Denoising losses and time sampling.

Identities between loss spaces.  Any two predictions consistent with the same z satisfy
α δx0 + σ δε = 0 (δ = prediction − truth), hence, per element and with SNR = e^λ,

    ‖ε̂ − ε‖² = SNR · ‖x̂0 − x0‖²
    ‖v̂ − v‖² = (1 + SNR) · ‖x̂0 − x0‖² = (1 + 1/SNR) · ‖ε̂ − ε‖² = ‖ε̂ − ε‖² / α²

(δv = α δε − σ δx0 = δε / α = −δx0 / σ).  Note (1 + e^{−λ}), not (1 + e^{λ}), relates the
v- and ε-space errors.

Weightings are named by their *effective weight on the x0-space error* w(λ)·‖x̂0 − x0‖², so a
name means the same objective whatever `loss_space` is; the multiplier actually applied to the
loss-space MSE is w(λ) / c(λ) with c = 1 (x0), SNR (eps), 1 + SNR (v):

    =============== ================ ==========================================
    weighting       w(λ) on x0-MSE   equals
    =============== ================ ==========================================
    'none'          (c(λ))           plain MSE in `loss_space`, no reweighting
    'snr'           SNR              plain ε-MSE (Ho et al. 2020 "simple" loss)
    'snr_plus_one'  1 + SNR          plain v-MSE (Salimans & Ho 2022)
    'truncated_snr' max(SNR, 1)      Salimans & Ho 2022 "truncated SNR"
    'min_snr_5'     min(SNR, 5)      Hang et al. 2023 Min-SNR-γ with γ = 5
    =============== ================ ==========================================
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import jax
import jax.numpy as jnp

from vdiff.diffusion.targets import (
    Parameterization,
    check_parameterization,
    predictions,
    q_sample,
    target,
    v_from,
)

Array = jax.Array
Weighting = Literal["none", "snr", "snr_plus_one", "truncated_snr", "min_snr_5"]
WEIGHTINGS: tuple[str, ...] = ("none", "snr", "snr_plus_one", "truncated_snr", "min_snr_5")


def _log_weight_x0(logsnr: Array, weighting: str) -> Array:
    """log w(λ) for the x0-space error."""
    if weighting == "snr":
        return logsnr
    if weighting == "snr_plus_one":
        return jax.nn.softplus(logsnr)
    if weighting == "truncated_snr":
        return jnp.maximum(logsnr, 0.0)
    if weighting == "min_snr_5":
        return jnp.minimum(logsnr, math.log(5.0))
    raise ValueError(f"Unknown weighting {weighting!r}; known: {list(WEIGHTINGS)}")


def _log_space_factor(logsnr: Array, loss_space: str) -> Array:
    """log c(λ), where loss-space MSE = c(λ) · x0-space MSE."""
    if loss_space == "x0":
        return jnp.zeros_like(logsnr)
    if loss_space == "eps":
        return logsnr
    return jax.nn.softplus(logsnr)


def loss_weight(*, logsnr: Array, weighting: Weighting, loss_space: Parameterization) -> Array:
    """Multiplier on the `loss_space` MSE: w(λ)/c(λ), computed as exp(log w − log c); 1 for 'none'."""
    check_parameterization(loss_space)
    logsnr = jnp.asarray(logsnr, jnp.float32)
    if weighting == "none":
        return jnp.ones_like(logsnr)
    return jnp.exp(_log_weight_x0(logsnr, weighting) - _log_space_factor(logsnr, loss_space))


def _to_space(*, x0_hat: Array, eps_hat: Array, logsnr: Array, space: str) -> Array:
    if space == "eps":
        return eps_hat
    if space == "x0":
        return x0_hat
    return v_from(x0=x0_hat, eps=eps_hat, logsnr=logsnr)


def masked_mean(sq: Array, *, mask: Array | None) -> Array:
    """Per-example mean over non-batch axes, over elements where `mask` (broadcast to sq) is 1."""
    axes = tuple(range(1, sq.ndim))
    if mask is None:
        return jnp.mean(sq, axis=axes)
    mask = jnp.broadcast_to(jnp.asarray(mask, sq.dtype), sq.shape)
    return jnp.sum(sq * mask, axis=axes) / jnp.maximum(jnp.sum(mask, axis=axes), 1.0)


def diffusion_loss(
    *,
    x0: Array,
    eps: Array,
    logsnr: Array,
    model_output: Array,
    parameterization: Parameterization,
    loss_space: Parameterization | None = None,
    weighting: Weighting = "none",
    mask: Array | None = None,
) -> Array:
    """Per-example weighted MSE [B] for a network evaluated at z = α x0 + σ ε.

    The output (in `parameterization`) is converted to `loss_space` (default: the same) via
    (x̂0, ε̂) consistent with z, compared with the true x0 / ε / v = α ε − σ x0 there, averaged
    over non-batch (masked) elements and multiplied by w(λ)/c(λ) (see module docstring).
    """
    check_parameterization(parameterization)
    loss_space = parameterization if loss_space is None else loss_space
    check_parameterization(loss_space)
    with jax.named_scope("diffusion_loss"):
        if loss_space == parameterization:
            pred = model_output
        else:
            z = q_sample(x0=x0, eps=eps, logsnr=logsnr)
            x0_hat, eps_hat = predictions(
                z=z, model_output=model_output, logsnr=logsnr, parameterization=parameterization
            )
            pred = _to_space(x0_hat=x0_hat, eps_hat=eps_hat, logsnr=logsnr, space=loss_space)
        true = target(x0=x0, eps=eps, logsnr=logsnr, parameterization=loss_space)
        sq = jnp.square(pred.astype(jnp.float32) - true.astype(jnp.float32))
        per_example = masked_mean(sq, mask=mask)
        weight = loss_weight(logsnr=logsnr, weighting=weighting, loss_space=loss_space)
        return per_example * weight


def sample_logsnr(
    *, rng: Array, batch_size: int, schedule: Callable[[Array], Array], low_discrepancy: bool = True
) -> tuple[Array, Array]:
    """Draw t ~ U[0, 1) per example and return (t, λ(t)), both [batch_size].

    low_discrepancy (Kingma et al. 2021, VDM): one u ~ U[0, 1), t_i = (u + i/B) mod 1, so the
    batch covers [0, 1) evenly (each t_i is still marginally uniform) and the Monte-Carlo
    estimate of the loss integral over t has lower variance.
    """
    if low_discrepancy:
        u = jax.random.uniform(rng, (), jnp.float32)
        t = jnp.mod(u + jnp.arange(batch_size, dtype=jnp.float32) / batch_size, 1.0)
    else:
        t = jax.random.uniform(rng, (batch_size,), jnp.float32)
    return t, schedule(t)

