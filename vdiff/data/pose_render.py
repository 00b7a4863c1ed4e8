"""Pose maps drawn from keypoints: the DensePose-like 2-channel limb map DreamPose takes
(`render_pose_uv`) and ControlNet-OpenPose's skeleton image (`render_openpose_rgb`), with
the per-pixel segment geometry both use (conventions: `vdiff.data.pose`)."""

from __future__ import annotations

import colorsys
from typing import Sequence

import numpy as np

from vdiff.data.pose_keypoints import CONF_THRESHOLD, COCO18_LIMBS, as_coco18, size_hw

# Limb parts of COCO-18 as one distinct code each, spread over (-1, 1]; -1 is background.
PART_CODES = (-1.0 + 2.0 * np.arange(1, len(COCO18_LIMBS) + 1) / len(COCO18_LIMBS)
              ).astype(np.float32)


def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """[1, H, 1] rows and [1, 1, W] columns of pixel centres (OpenPose convention)."""
    return (np.arange(h, dtype=np.float32)[None, :, None],
            np.arange(w, dtype=np.float32)[None, None, :])


def segment_distance(p0: np.ndarray, p1: np.ndarray, size: int | Sequence[int]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Distance of every pixel to each of L segments, and the position along it.

    ``p0``, ``p1``: [L, 2] (x, y) endpoints. Returns ``(dist, t)``, both float32
    [L, H, W]: ``dist`` to the nearest point of the segment, ``t`` in [0, 1] that
    point's position from ``p0`` to ``p1`` (0 for a zero-length segment).
    """
    h, w = size_hw(size)
    p0 = np.asarray(p0, np.float32).reshape(-1, 2)
    p1 = np.asarray(p1, np.float32).reshape(-1, 2)
    ys, xs = _pixel_grid(h, w)
    ax, ay = p0[:, 0, None, None], p0[:, 1, None, None]
    dx, dy = p1[:, 0, None, None] - ax, p1[:, 1, None, None] - ay
    len2 = dx * dx + dy * dy
    rx, ry = xs - ax, ys - ay
    t = np.where(len2 > 1e-12, (rx * dx + ry * dy) / np.maximum(len2, 1e-12), 0.0)
    t = np.clip(t, 0.0, 1.0)
    dist = np.hypot(rx - t * dx, ry - t * dy)
    return dist.astype(np.float32), t.astype(np.float32)


def _visible_limbs(kps: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices into COCO18_LIMBS of limbs with both joints visible, and the [L, 2] pairs."""
    pairs = np.asarray(COCO18_LIMBS)
    vis = kps[:, 2] > threshold
    keep = np.nonzero(vis[pairs[:, 0]] & vis[pairs[:, 1]])[0]
    return keep, pairs[keep]


def _limb_radius(limb_radius: float, h: int, w: int) -> float:
    return max(1.0, float(limb_radius) * min(h, w))


def render_pose_uv(kps: np.ndarray, size: int | Sequence[int], *,
                   limb_radius: float = 0.03,
                   threshold: float = CONF_THRESHOLD) -> np.ndarray:
    """A DensePose-like 2-channel pose map from 2D keypoints, float32 [..., H, W, 2].

    For users without DensePose, to drive DreamPose from OpenPose keypoints. Every COCO-18
    limb whose two joints are visible is a thick segment (half-width ``limb_radius`` times
    the image's shorter side, at least one pixel). A pixel it covers carries channel 0 = the
    limb's code (``PART_CODES``, distinct per body part, spread over (-1, 1]) and
    channel 1 = its normalised position along the limb, -1 at the first joint of the pair
    to 1 at the second; where limbs overlap the nearest one wins. Background is -1 in both
    channels. ``kps`` is [..., K, 3] in either layout, in pixels of an image of ``size``.
    """
    kps = as_coco18(kps)
    h, w = size_hw(size)
    lead = kps.shape[:-2]
    flat = kps.reshape(-1, *kps.shape[-2:])
    out = np.full((len(flat), h, w, 2), -1.0, np.float32)
    radius = _limb_radius(limb_radius, h, w)
    for n, pose in enumerate(flat):
        keep, pairs = _visible_limbs(pose, threshold)
        if not len(keep):
            continue
        dist, t = segment_distance(pose[pairs[:, 0], :2], pose[pairs[:, 1], :2], (h, w))
        nearest = np.argmin(dist, axis=0)                                   # [H, W]
        d = np.take_along_axis(dist, nearest[None], 0)[0]
        covered = d <= radius
        pos = np.take_along_axis(t, nearest[None], 0)[0]
        out[n, ..., 0] = np.where(covered, PART_CODES[keep][nearest], -1.0)
        out[n, ..., 1] = np.where(covered, 2.0 * pos - 1.0, -1.0)
    return out.reshape(*lead, h, w, 2)


def openpose_colors(n: int = 18) -> np.ndarray:
    """[n, 3] float32 RGB in [0, 1]: ControlNet-OpenPose's palette, hues 20 degrees apart."""
    return np.array([colorsys.hsv_to_rgb((i * 20.0 % 360.0) / 360.0, 1.0, 1.0)
                     for i in range(n)], np.float32)


def render_openpose_rgb(kps: np.ndarray, size: int | Sequence[int], *,
                        threshold: float = CONF_THRESHOLD,
                        limb_radius: float | None = None,
                        joint_radius: float | None = None) -> np.ndarray:
    """ControlNet-OpenPose-style skeleton image, float32 [..., H, W, 3] in [-1, 1].

    Joint dots in full colour, then the COCO-18 limbs blended over them at 60% colour, on
    black (-1), with ControlNet's palette and drawing order. Radii are in pixels; by default
    4 pixels at 512 (ControlNet's stick width and dot radius), scaled with the shorter side.
    """
    kps = as_coco18(kps)
    h, w = size_hw(size)
    scale = min(h, w) / 512.0
    limb_r = max(1.0, 4.0 * scale) if limb_radius is None else float(limb_radius)
    joint_r = max(1.0, 4.0 * scale) if joint_radius is None else float(joint_radius)
    colors = openpose_colors(18)
    lead = kps.shape[:-2]
    flat = kps.reshape(-1, *kps.shape[-2:])
    out = np.zeros((len(flat), h, w, 3), np.float32)
    ys, xs = _pixel_grid(h, w)
    for n, pose in enumerate(flat):
        canvas = out[n]
        vis = np.nonzero(pose[:, 2] > threshold)[0]
        if len(vis):
            d2 = ((xs - pose[vis, 0, None, None]) ** 2
                  + (ys - pose[vis, 1, None, None]) ** 2)                    # [J, H, W]
            for j, k in enumerate(vis):                                      # later on top
                canvas[d2[j] <= joint_r ** 2] = colors[k]
        keep, pairs = _visible_limbs(pose, threshold)
        if len(keep):
            dist, _ = segment_distance(pose[pairs[:, 0], :2], pose[pairs[:, 1], :2], (h, w))
            for j, limb in enumerate(keep):
                m = dist[j] <= limb_r
                canvas[m] = 0.4 * canvas[m] + 0.6 * colors[limb]
    return (out * 2.0 - 1.0).reshape(*lead, h, w, 3)
