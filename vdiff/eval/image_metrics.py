"""PSNR and SSIM per frame and averaged over a video.

Images are [..., H, W, C]; videos [..., T, H, W, C]. `data_range` R is the span of the
pixel values: pass it, or leave it None to take it from the dtype — 255 for uint8, 2.0 for
floats (taken to be in [−1, 1], vdiff's convention). Computed in float32 with jax.numpy.

  PSNR = 10 log10(R² / MSE)                          (identical images: +inf)
  SSIM = mean over pixels and channels of
         (2 μ_x μ_y + C1)(2 σ_xy + C2) / ((μ_x² + μ_y² + C1)(σ_x² + σ_y² + C2)),
  local statistics under an 11×11 Gaussian window (σ = 1.5, normalized to sum 1) at the
  positions where it fits ("valid", as in Wang et al. 2004), population (co)variances,
  C1 = (K1 R)², C2 = (K2 R)², K1 = 0.01, K2 = 0.03. Each channel separately, then averaged.

Video values are the mean of the per-frame values.
"""

from __future__ import annotations

from typing import Any

import einops
import jax
import jax.numpy as jnp
import numpy as np

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03


def default_data_range(x: Any) -> float:
    """255 for uint8 arrays, 2.0 for float arrays in [−1, 1]."""
    return 255.0 if np.asarray(x).dtype == np.uint8 else 2.0


def _pair(a: Any, b: Any, data_range: float | None, min_ndim: int) -> tuple[jax.Array, ...]:
    if np.shape(a) != np.shape(b) or np.ndim(a) < min_ndim:
        raise ValueError(f"inputs must have one shape with at least {min_ndim} axes, got "
                         f"{np.shape(a)} and {np.shape(b)}")
    r = default_data_range(a) if data_range is None else float(data_range)
    return jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), r


def mse(a: Any, b: Any) -> jax.Array:
    """Mean squared error over the last three axes (H, W, C)."""
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    return jnp.mean((a - b) ** 2, axis=(-3, -2, -1))


def psnr(a: Any, b: Any, *, data_range: float | None = None) -> jax.Array:
    """Per-image PSNR in dB, shape [...] for images [..., H, W, C]."""
    a, b, r = _pair(a, b, data_range, 3)
    with jax.named_scope("psnr"):
        return 10.0 * jnp.log10(r ** 2 / mse(a, b))


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """Normalized 1-D Gaussian taps g_i ∝ exp(−(i − c)² / 2σ²), Σ g = 1."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).astype(np.float32)


def _filter_valid(x: jax.Array, taps: jax.Array) -> jax.Array:
    """Separable Gaussian filter of [B, H, W] images over the positions where it fits."""
    k = taps.shape[0]
    x = x[:, None]  # [B, 1, H, W]
    dn = ("NCHW", "OIHW", "NCHW")
    x = jax.lax.conv_general_dilated(x, taps.reshape(1, 1, k, 1), (1, 1), "VALID",
                                     dimension_numbers=dn, precision="highest")
    x = jax.lax.conv_general_dilated(x, taps.reshape(1, 1, 1, k), (1, 1), "VALID",
                                     dimension_numbers=dn, precision="highest")
    return x[:, 0]


def ssim(a: Any, b: Any, *, data_range: float | None = None, window: int = WINDOW,
         sigma: float = SIGMA, k1: float = K1, k2: float = K2) -> jax.Array:
    """Per-image SSIM, shape [...] for images [..., H, W, C] (H, W ≥ window)."""
    a, b, r = _pair(a, b, data_range, 3)
    if min(a.shape[-3:-1]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} (the window), "
                         f"got {a.shape[-3]}x{a.shape[-2]}")
    batch = a.shape[:-3]
    flat = lambda x: einops.rearrange(x.reshape((-1,) + x.shape[-3:]), "n h w c -> (n c) h w")
    x, y = flat(a), flat(b)
    taps = jnp.asarray(gaussian_window(window, sigma))
    with jax.named_scope("ssim"):
        mu_x, mu_y = _filter_valid(x, taps), _filter_valid(y, taps)
        var_x = _filter_valid(x * x, taps) - mu_x ** 2
        var_y = _filter_valid(y * y, taps) - mu_y ** 2
        cov = _filter_valid(x * y, taps) - mu_x * mu_y
        c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
        smap = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
            (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
        per_channel = jnp.mean(smap, axis=(-2, -1))
        per_image = einops.reduce(per_channel, "(n c) -> n", "mean", c=a.shape[-1])
    return per_image.reshape(batch)


def video_psnr(a: Any, b: Any, *, data_range: float | None = None) -> jax.Array:
    """Mean per-frame PSNR, shape [...] for videos [..., T, H, W, C]."""
    _pair(a, b, data_range, 4)
    return jnp.mean(psnr(a, b, data_range=data_range), axis=-1)


def video_ssim(a: Any, b: Any, *, data_range: float | None = None) -> jax.Array:
    """Mean per-frame SSIM, shape [...] for videos [..., T, H, W, C]."""
    _pair(a, b, data_range, 4)
    return jnp.mean(ssim(a, b, data_range=data_range), axis=-1)
