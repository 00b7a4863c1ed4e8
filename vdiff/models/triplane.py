"""PVDM's projected latent: three image-like planes of one video clip (channels last).

A clip of S frames at H×W, patchified by p, has a 3D latent u ∈ [S, H′, W′, C]
(H′ = H/p, W′ = W/p). PVDM projects u along each axis:

    s = z^s ∈ [B, H′, W′, C]   (time projected out: shared content)
    h = z^h ∈ [B, S,  W′, C]   (height projected out: motion along x)
    w = z^w ∈ [B, S,  H′, C]   (width projected out: motion along y)

and the decoder sees every voxel (t, i, j) as the concatenation
[z^s_{ij}, z^h_{tj}, z^w_{ti}] ∈ 3C (`compose_volume`). The denoiser treats the planes as
three images that share weights and, in attention layers, one token sequence
(`to_tokens` / `from_tokens`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Triplane(NamedTuple):
    """The three planes; a pytree, so jax.tree.map and jit work on it directly."""

    s: jax.Array  # [B, H′, W′, C]
    h: jax.Array  # [B, S, W′, C]
    w: jax.Array  # [B, S, H′, C]


def plane_shapes(*, num_frames: int, height: int, width: int, patch_size: int,
                 channels: int) -> Triplane:
    """Per-example shapes (no batch axis) of the planes for a clip S×H×W."""
    if height % patch_size or width % patch_size:
        raise ValueError(f"frame size {height}x{width} is not divisible by the patch size "
                         f"{patch_size}")
    hp, wp = height // patch_size, width // patch_size
    return Triplane(s=(hp, wp, channels), h=(num_frames, wp, channels),
                    w=(num_frames, hp, channels))


def compose_volume(planes: Triplane) -> jax.Array:
    """[B, S, H′, W′, 3C] with voxel (t, i, j) = [s_{ij}, h_{tj}, w_{ti}]."""
    b, hp, wp, c = planes.s.shape
    num_frames = planes.h.shape[1]
    s = jnp.broadcast_to(planes.s[:, None, :, :, :], (b, num_frames, hp, wp, c))
    h = jnp.broadcast_to(planes.h[:, :, None, :, :], (b, num_frames, hp, wp, c))
    w = jnp.broadcast_to(planes.w[:, :, :, None, :], (b, num_frames, hp, wp, c))
    return jnp.concatenate([s, h, w], axis=-1)


def to_tokens(planes: Triplane) -> jax.Array:
    """[B, H′W′ + SW′ + SH′, C]: the three planes' positions as one token sequence."""
    return jnp.concatenate([p.reshape(p.shape[0], -1, p.shape[-1]) for p in planes], axis=1)


def from_tokens(tokens: jax.Array, like: Triplane) -> Triplane:
    """Inverse of `to_tokens`; `like` gives the planes' spatial shapes (channels may differ)."""
    sizes = [p.shape[1] * p.shape[2] for p in like]
    parts, start = [], 0
    for p, n in zip(like, sizes):
        parts.append(tokens[:, start:start + n].reshape(
            tokens.shape[0], p.shape[1], p.shape[2], tokens.shape[-1]))
        start += n
    return Triplane(*parts)


def concat_channels(a: Triplane, b: Triplane) -> Triplane:
    """Plane-wise channel concatenation (the denoiser's conditioning input)."""
    return Triplane(*(jnp.concatenate([x, y], axis=-1) for x, y in zip(a, b)))
