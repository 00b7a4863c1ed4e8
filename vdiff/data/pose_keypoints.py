"""Pose keypoints: the BODY_25 and COCO-18 layouts, conversion between them, rescaling to
another image size and interpolation between two poses (conventions: `vdiff.data.pose`)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vdiff.errors import ConfigError

CONF_THRESHOLD = 0.05

BODY25_NAMES = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist",
    "MidHip", "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye",
    "REar", "LEar", "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
)
BODY25_LIMBS = (
    (1, 8), (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (10, 11),
    (8, 12), (12, 13), (13, 14), (1, 0), (0, 15), (15, 17), (0, 16), (16, 18),
    (14, 19), (19, 20), (14, 21), (11, 22), (22, 23), (11, 24),
)

COCO18_NAMES = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist",
    "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
)
# In the order (and so with the colours) ControlNet-OpenPose draws them.
COCO18_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)

LAYOUTS = {
    "body25": (BODY25_NAMES, BODY25_LIMBS),
    "coco18": (COCO18_NAMES, COCO18_LIMBS),
}

# COCO-18 joint k is BODY_25 joint _COCO18_FROM_BODY25[k].
_COCO18_FROM_BODY25 = np.array([BODY25_NAMES.index(n) for n in COCO18_NAMES])


def layout_of(kps: np.ndarray) -> str:
    """'body25' or 'coco18' from the keypoint count (the second-last axis)."""
    k = np.shape(kps)[-2]
    for name, (names, _) in LAYOUTS.items():
        if len(names) == k:
            return name
    raise ConfigError(f"keypoints have {k} joints; expected 25 (OpenPose BODY_25) "
                      "or 18 (COCO-18)")


def body25_to_coco18(kps: np.ndarray) -> np.ndarray:
    """[..., 25, 3] BODY_25 keypoints -> [..., 18, 3] COCO-18 (drops mid-hip and feet)."""
    kps = np.asarray(kps)
    if kps.shape[-2:] != (25, 3):
        raise ConfigError(f"body25_to_coco18 expects [..., 25, 3] keypoints, got {kps.shape}")
    return kps[..., _COCO18_FROM_BODY25, :]


def as_coco18(kps: np.ndarray) -> np.ndarray:
    """Keypoints in either layout as float32 COCO-18 [..., 18, 3]."""
    kps = np.asarray(kps, np.float32)
    if kps.ndim < 2 or kps.shape[-1] != 3:
        raise ConfigError(f"keypoints must be [..., K, 3] (x, y, confidence), got {kps.shape}")
    return body25_to_coco18(kps) if layout_of(kps) == "body25" else kps


def size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) of a ``size`` given as an int (square) or a pair; both positive."""
    if np.ndim(size) == 0:
        h = w = int(size)
    else:
        if len(size) != 2:
            raise ConfigError(f"size must be an int or (height, width), got {size!r}")
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ConfigError(f"size must be positive, got {size!r}")
    return h, w


def normalize_keypoints(kps: np.ndarray, src_size: int | Sequence[int],
                        dst_size: int | Sequence[int]) -> np.ndarray:
    """Rescales [..., K, 3] pixel coordinates from an image of ``src_size`` to ``dst_size``.

    Pixel centres map onto pixel centres (``x' = (x + 0.5) * W'/W - 0.5``), as an image
    resize does. Confidences are kept; undetected joints (confidence <= 0) stay at 0, 0.
    ``src_size`` / ``dst_size`` are ``int`` or ``(height, width)``; a non-square change
    stretches (crop or pad first to keep the aspect ratio).
    """
    kps = np.asarray(kps, np.float32)
    (sh, sw), (dh, dw) = size_hw(src_size), size_hw(dst_size)
    out = kps.copy()
    out[..., 0] = (kps[..., 0] + 0.5) * (dw / sw) - 0.5
    out[..., 1] = (kps[..., 1] + 0.5) * (dh / sh) - 0.5
    missing = kps[..., 2] <= 0
    out[..., :2][missing] = 0.0
    return out


def interpolate_keypoints(a: np.ndarray, b: np.ndarray, ts: Any, *,
                          threshold: float = CONF_THRESHOLD) -> np.ndarray:
    """[len(ts), K, 3] keypoints linearly interpolated from ``a`` (t=0) to ``b`` (t=1).

    Joints visible (confidence > ``threshold``) in both poses move linearly and their
    confidence is interpolated too; every other joint is ``0, 0, 0`` (not detected).
    ``ts`` is a scalar or a 1-D sequence; values outside [0, 1] extrapolate.
    """
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3:
        raise ConfigError(f"interpolate_keypoints needs two [K, 3] poses of one layout, "
                          f"got {a.shape} and {b.shape}")
    ts = np.atleast_1d(np.asarray(ts, np.float32))
    if ts.ndim != 1:
        raise ConfigError(f"ts must be a scalar or 1-D, got shape {ts.shape}")
    t = ts[:, None, None]
    out = (1.0 - t) * a[None] + t * b[None]
    both = (a[:, 2] > threshold) & (b[:, 2] > threshold)
    return np.where(both[None, :, None], out, 0.0).astype(np.float32)
