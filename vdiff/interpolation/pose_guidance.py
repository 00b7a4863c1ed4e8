"""Pose guidance for interpolation: OpenPose keypoints of the two images, shared joints
moved linearly, rendered as ControlNet-OpenPose skeletons and fed through a ControlNet
with a strength profile over the sequence."""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from vdiff.data import pose as pose_lib
from vdiff.errors import ConfigError

PROFILES = ("constant", "taper", "sine")


def strength_profile(position: float, strength: float = 1.0, profile: str = "constant",
                     taper: float = 0.25) -> float:
    """ControlNet strength at ``position`` ∈ [0, 1] of the sequence.

    constant: ``strength``. taper: ``strength · min(1, d / taper)`` with d the distance to
    the nearer end (no control at the real images, full control in the middle).
    sine: ``strength · sin(π · position)``.
    """
    p = float(np.clip(position, 0.0, 1.0))
    if profile == "constant":
        return float(strength)
    if profile == "taper":
        if taper <= 0:
            return float(strength)
        return float(strength) * min(1.0, min(p, 1.0 - p) / taper)
    if profile == "sine":
        return float(strength) * float(np.sin(np.pi * p))
    raise ConfigError(f"control profile {profile!r} is not one of {PROFILES}")


def scale_keypoints(kps: np.ndarray, src_hw: tuple[int, int],
                    dst_hw: tuple[int, int]) -> np.ndarray:
    """Pixel keypoints of an image of src (H, W) → of the image resized to dst (H, W)."""
    out = np.array(kps, np.float32, copy=True)
    out[..., 0] *= dst_hw[1] / src_hw[1]
    out[..., 1] *= dst_hw[0] / src_hw[0]
    return out


def pose_images(kps_a: np.ndarray, kps_b: np.ndarray, positions, size) -> np.ndarray:
    """[T, H, W, 3] skeletons in [−1, 1] of the poses interpolated at ``positions``."""
    a, b = pose_lib.as_coco18(np.asarray(kps_a)), pose_lib.as_coco18(np.asarray(kps_b))
    kps = pose_lib.interpolate_keypoints(a, b, positions)
    return pose_lib.render_openpose_rgb(kps, size)


def control_cond_fn(kps_a: np.ndarray, kps_b: np.ndarray, size: tuple[int, int], *,
                    strength: float = 1.0, profile: str = "constant",
                    taper: float = 0.25) -> Callable[[int, float], dict]:
    """``extra(frame, position)`` for `schemes.text_cond_fn`: the control image and its
    strength for that frame."""
    strength_profile(0.5, strength, profile, taper)  # validate early

    def fn(frame: int, pos: float) -> dict:
        img = pose_images(kps_a, kps_b, [pos], size)[0]
        return {"control": jnp.asarray(img, jnp.float32),
                "control_scale": jnp.asarray(strength_profile(pos, strength, profile, taper),
                                             jnp.float32)}

    return fn
