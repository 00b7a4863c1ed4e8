"""Pose windows: the pose maps of a frame and its neighbours concatenated on channels, as
DreamPose conditions on them; numpy or jax (usable under `jit` with a traced index)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from vdiff.errors import ConfigError


def _is_jax(x: Any) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.Array)


def pose_window_indices(num_frames: int, i: Any, radius: int = 2) -> Any:
    """Frame indices ``i - radius .. i + radius`` clamped to ``[0, num_frames - 1]``.

    Numpy int array for a Python/numpy ``i``; a jax array when ``i`` is a jax value (so it
    works under ``jit`` with a traced index).
    """
    if num_frames <= 0:
        raise ConfigError(f"pose_window needs at least one frame, got {num_frames}")
    if _is_jax(i):
        import jax.numpy as jnp
        return jnp.clip(jnp.arange(-radius, radius + 1) + i, 0, num_frames - 1)
    i = int(i)
    if not 0 <= i < num_frames:
        raise ConfigError(f"frame index {i} outside a sequence of {num_frames} frames")
    return np.clip(np.arange(i - radius, i + radius + 1), 0, num_frames - 1)


def pose_window(poses: Any, i: Any, radius: int = 2) -> Any:
    """Pose maps of frames ``i - radius .. i + radius`` concatenated on channels.

    ``poses``: [..., T, H, W, C] (numpy or jax; a jax array or a jax ``i`` gives a jax
    result, usable under ``jit``). Returns [..., H, W, C * (2 * radius + 1)], frame
    ``i - radius`` in the first C channels; indices are clamped at the sequence ends, so
    frame 0's window is frames 0, 0, 0, 1, 2. (DreamPose's released code feeds one pose
    five times; these are distinct consecutive frames, as in its paper.)
    """
    if np.ndim(poses) < 4:
        raise ConfigError(f"pose_window needs [..., T, H, W, C] poses, got {np.shape(poses)}")
    t, h, w, c = np.shape(poses)[-4:]
    idx = pose_window_indices(t, i, radius)
    if _is_jax(poses) or _is_jax(idx):
        import jax.numpy as jnp
        frames = jnp.take(jnp.asarray(poses), idx, axis=-4)                 # [..., n, H, W, C]
        frames = jnp.moveaxis(frames, -4, -2)                               # [..., H, W, n, C]
    else:
        frames = np.moveaxis(np.take(np.asarray(poses), idx, axis=-4), -4, -2)
    return frames.reshape(*frames.shape[:-2], (2 * radius + 1) * c)


def pose_windows(poses: np.ndarray, radius: int = 2) -> np.ndarray:
    """Every frame's window: [..., T, H, W, C] -> [..., T, H, W, C * (2 * radius + 1)]."""
    t = np.shape(poses)[-4]
    xp = np
    if _is_jax(poses):
        import jax.numpy as jnp
        xp = jnp
    return xp.stack([pose_window(poses, i, radius) for i in range(t)], axis=-4)
