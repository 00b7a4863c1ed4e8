"""Conditioning plumbing of the SinFusion roles: pure functions of float videos
[B, T, h, w, C] in [−1, 1] that pick each role's target and clean conditioning frames, and
the synthetic stand-in video of the conditional roles' periodic samples."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class RoleInputs(NamedTuple):
    """What one role trains on: target x0 [B,h,w,C], clean frames [B,h,w,m·C], k [B]."""

    x0: jax.Array
    cond: jax.Array | None = None
    frame_diff: jax.Array | None = None


def frames_at(video: jax.Array, index: jax.Array) -> jax.Array:
    """video[b, index[b]] for every b: [B, T, h, w, C], int [B] → [B, h, w, C]."""
    return jax.vmap(lambda v, i: jax.lax.dynamic_index_in_dim(v, i, 0, keepdims=False))(
        video, jnp.asarray(index, jnp.int32))


def projector_inputs(video: jax.Array, n: jax.Array) -> RoleInputs:
    """Unconditional (image / projector): x0 = frame n."""
    return RoleInputs(x0=frames_at(video, n))


def predictor_inputs(video: jax.Array, n: jax.Array, k: jax.Array,
                     context: int = 1) -> RoleInputs:
    """Predictor: cond = frames n, n − k, …, n − (context−1)·k (clean, on channels, frame n
    first), x0 = frame n + k, frame_diff = k."""
    k = jnp.asarray(k, jnp.int32)
    n = jnp.asarray(n, jnp.int32)
    cond = jnp.concatenate([frames_at(video, n - j * k) for j in range(context)],
                           axis=-1)
    return RoleInputs(x0=frames_at(video, n + k), cond=cond, frame_diff=k)


def interpolator_inputs(video: jax.Array, n: jax.Array) -> RoleInputs:
    """Interpolator: cond = [frame n ‖ frame n + 2] on channels, x0 = frame n + 1."""
    cond = jnp.concatenate([frames_at(video, n), frames_at(video, n + 2)], axis=-1)
    return RoleInputs(x0=frames_at(video, n + 1), cond=cond)


def synthetic_frames(num: int, num_frames: int, height: int, width: int,
                     channels: int) -> jax.Array:
    """Smooth moving blobs in [−1, 1], [num, T, H, W, C]: a stand-in conditioning video for the
    trainer's periodic samples of the conditional roles (real frames go through the apps)."""
    t = jnp.arange(num_frames, dtype=jnp.float32)[None, :, None, None]
    phase = jnp.arange(num, dtype=jnp.float32)[:, None, None, None]
    yy, xx = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                          jnp.arange(width, dtype=jnp.float32), indexing="ij")
    cy = height / 2 + height / 4 * jnp.sin(0.3 * t + phase)
    cx = width / 2 + width / 4 * jnp.cos(0.3 * t + phase)
    blob = jnp.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (min(height, width) / 5) ** 2))
    c = jnp.linspace(0.5, 1.0, channels)
    return 2.0 * blob[..., None] * c - 1.0
