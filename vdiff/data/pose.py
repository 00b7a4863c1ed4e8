"""2D human pose: keypoint files, interpolation, pose maps for DreamPose and ControlNet.

Numpy only (PIL to read images). Conventions shared by every function here:

* Keypoints are float arrays ``[..., K, 3]`` of ``(x, y, confidence)`` in pixels of the
  image they were detected on, with OpenPose's convention: the pixel in row ``i``,
  column ``j`` is centred at ``x = j, y = i``. OpenPose writes an undetected joint as
  ``0, 0, 0``; a joint counts as visible when its confidence exceeds ``threshold``
  (default ``CONF_THRESHOLD``, OpenPose's own render threshold).
* Two layouts are known: OpenPose BODY_25 (``K = 25``, OpenPose's default output) and
  COCO-18 (``K = 18``, OpenPose's COCO model and the format ControlNet-OpenPose was
  trained on). The renderers draw the COCO-18 skeleton; BODY_25 input is converted with
  ``body25_to_coco18`` (which drops the mid-hip and the feet), so one pose drawn from
  either layout gives the same map.
* Every image or map returned is float32 in [-1, 1], background -1.
* ``size`` is ``int`` (square) or ``(height, width)``.
"""

from __future__ import annotations

import colorsys
import json
import os
import re
import sys
from typing import Any, Sequence

import numpy as np

from vdiff.errors import ConfigError
from vdiff.core.pixels import to_unit_range

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

# Limb parts of COCO-18 as one distinct code each, spread over (-1, 1]; -1 is background.
PART_CODES = (-1.0 + 2.0 * np.arange(1, len(COCO18_LIMBS) + 1) / len(COCO18_LIMBS)
              ).astype(np.float32)

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class PoseFileError(ConfigError):
    """A keypoint or DensePose file cannot be read; the message names the file and why."""


# ----------------------------------------------------------------------------- layouts


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


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    if np.ndim(size) == 0:
        h = w = int(size)
    else:
        if len(size) != 2:
            raise ConfigError(f"size must be an int or (height, width), got {size!r}")
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ConfigError(f"size must be positive, got {size!r}")
    return h, w


def natural_key(name: str) -> list:
    """Sort key that orders 'frame2' before 'frame10'."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


# ----------------------------------------------------------------------------- reading JSON


def _read_json(path: str) -> Any:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise PoseFileError(f"{path}: no such keypoint file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PoseFileError(f"{path}: cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise PoseFileError(f"{path}: not valid JSON ({e})") from None


def _as_keypoint_array(values: Any, where: str) -> np.ndarray:
    """A flat [x0, y0, c0, x1, ...] list or a nested [[x, y, c], ...] list -> [K, 3]."""
    try:
        arr = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise PoseFileError(f"{where}: keypoints must be numbers") from None
    if arr.ndim == 1:
        if arr.size % 3:
            raise PoseFileError(f"{where}: {arr.size} keypoint values is not a multiple of 3 "
                                "(x, y, confidence per joint)")
        arr = arr.reshape(-1, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise PoseFileError(f"{where}: keypoints must be a flat list of x, y, confidence "
                            f"triples or a list of [x, y, confidence], got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise PoseFileError(f"{where}: keypoints contain NaN or infinite values")
    return arr.astype(np.float32)


def _parse_openpose_frame(data: Any, where: str) -> np.ndarray | None:
    """One OpenPose frame dict -> [K, 3] of its most confident person; None if no people."""
    if not isinstance(data, dict):
        raise PoseFileError(f"{where}: expected an OpenPose JSON object with a 'people' "
                            f"list, got {type(data).__name__}")
    if "people" not in data:
        raise PoseFileError(f"{where}: no 'people' key (expected OpenPose JSON "
                            "{\"people\": [{\"pose_keypoints_2d\": [...]}]})")
    people = data["people"]
    if not isinstance(people, list):
        raise PoseFileError(f"{where}: 'people' must be a list, got {type(people).__name__}")
    best, best_conf = None, -np.inf
    for n, person in enumerate(people):
        if not isinstance(person, dict):
            raise PoseFileError(f"{where}: people[{n}] must be an object")
        # "pose_keypoints" is the key of OpenPose before 1.2.
        key = next((k for k in ("pose_keypoints_2d", "pose_keypoints") if k in person), None)
        if key is None:
            raise PoseFileError(f"{where}: people[{n}] has no 'pose_keypoints_2d'")
        kps = _as_keypoint_array(person[key], f"{where}: people[{n}].{key}")
        if best is not None and kps.shape != best.shape:
            raise PoseFileError(f"{where}: people[{n}] has {len(kps)} keypoints, people[0] "
                                f"has {len(best)}")
        conf = float(kps[:, 2].sum())
        if best is None or conf > best_conf:
            best, best_conf = kps, conf
    return best


def _check_count(kps: np.ndarray, num_keypoints: int | None, where: str) -> None:
    if num_keypoints is not None and len(kps) != num_keypoints:
        raise PoseFileError(f"{where}: has {len(kps)} keypoints, expected {num_keypoints}")


def load_openpose_json(path: str, *, num_keypoints: int | None = None) -> np.ndarray:
    """[K, 3] float32 (x, y, confidence) of the most confident person in an OpenPose JSON.

    The file is OpenPose's per-frame output ``{"people": [{"pose_keypoints_2d": [...]}]}``;
    with several people the one with the largest total confidence is taken. With no people
    every joint is ``0, 0, 0`` (``num_keypoints`` of them, BODY_25's 25 by default).
    ``num_keypoints``, when given, is also checked against the file. Raises
    ``PoseFileError`` (a ``ConfigError``) naming the file and the problem.
    """
    path = os.fspath(path)
    kps = _parse_openpose_frame(_read_json(path), path)
    if kps is None:
        return np.zeros((num_keypoints or len(BODY25_NAMES), 3), np.float32)
    _check_count(kps, num_keypoints, path)
    return kps


def _parse_sequence_item(item: Any, where: str) -> np.ndarray | None:
    if isinstance(item, dict):
        return _parse_openpose_frame(item, where)
    if isinstance(item, list) and not item:
        return None  # an empty frame: nobody detected
    return _as_keypoint_array(item, where)


def load_keypoint_sequence(path_or_folder: str, *,
                           num_keypoints: int | None = None) -> np.ndarray:
    """[T, K, 3] float32 keypoints of a sequence.

    ``path_or_folder`` is either a folder of per-frame OpenPose JSON files (read in natural
    order, so ``frame_2.json`` before ``frame_10.json``), or one JSON file holding a list of
    frames (or ``{"frames": [...]}``), each frame an OpenPose frame object, a flat
    ``[x, y, c, ...]`` list or a ``[[x, y, c], ...]`` list. Frames without people get all
    joints at confidence 0. Every frame must have the same number of joints.
    """
    path = os.fspath(path_or_folder)
    frames: list[np.ndarray | None] = []
    wheres: list[str] = []
    if os.path.isdir(path):
        names = sorted((n for n in os.listdir(path) if n.lower().endswith(".json")),
                       key=natural_key)
        if not names:
            raise PoseFileError(f"{path}: folder holds no .json keypoint files")
        for name in names:
            where = os.path.join(path, name)
            frames.append(_parse_openpose_frame(_read_json(where), where))
            wheres.append(where)
    else:
        data = _read_json(path)
        if isinstance(data, dict) and "frames" in data:
            data = data["frames"]
        if not isinstance(data, list):
            raise PoseFileError(f"{path}: expected a list of frames (or a folder of "
                                f"per-frame OpenPose JSON files), got {type(data).__name__}")
        if not data:
            raise PoseFileError(f"{path}: holds no frames")
        for t, item in enumerate(data):
            where = f"{path}: frame {t}"
            frames.append(_parse_sequence_item(item, where))
            wheres.append(where)
    k = num_keypoints
    for where, f in zip(wheres, frames):
        if f is None:
            continue
        if k is None:
            k = len(f)
        elif len(f) != k:
            raise PoseFileError(f"{where}: has {len(f)} keypoints, expected {k} like "
                                + ("num_keypoints" if num_keypoints is not None
                                   else "the frames before it"))
    k = len(BODY25_NAMES) if k is None else k
    empty = np.zeros((k, 3), np.float32)
    return np.stack([empty if f is None else f for f in frames]).astype(np.float32)


# ----------------------------------------------------------------------------- geometry


def normalize_keypoints(kps: np.ndarray, src_size: int | Sequence[int],
                        dst_size: int | Sequence[int]) -> np.ndarray:
    """Rescales [..., K, 3] pixel coordinates from an image of ``src_size`` to ``dst_size``.

    Pixel centres map onto pixel centres (``x' = (x + 0.5) * W'/W - 0.5``), as an image
    resize does. Confidences are kept; undetected joints (confidence <= 0) stay at 0, 0.
    ``src_size`` / ``dst_size`` are ``int`` or ``(height, width)``; a non-square change
    stretches (crop or pad first to keep the aspect ratio).
    """
    kps = np.asarray(kps, np.float32)
    (sh, sw), (dh, dw) = _hw(src_size), _hw(dst_size)
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
    h, w = _hw(size)
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


# ----------------------------------------------------------------------------- pose maps


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
    h, w = _hw(size)
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
    h, w = _hw(size)
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


# ----------------------------------------------------------------------------- DensePose


def _image_paths(paths: str | Sequence[str]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        p = os.fspath(paths)
        if os.path.isdir(p):
            names = sorted((n for n in os.listdir(p)
                            if n.lower().endswith(_IMAGE_EXTENSIONS)), key=natural_key)
            if not names:
                raise PoseFileError(f"{p}: folder holds no image files")
            return [os.path.join(p, n) for n in names]
        return [p]
    out = [os.fspath(p) for p in paths]
    if not out:
        raise PoseFileError("load_densepose_iuv: no paths given")
    return out


def _nearest_resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    sh, sw = img.shape[:2]
    rows = np.minimum(((np.arange(h) + 0.5) * sh / h).astype(np.int64), sh - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * sw / w).astype(np.int64), sw - 1)
    return img[rows[:, None], cols[None, :]]


def load_densepose_iuv(paths: str | Sequence[str], size: int | Sequence[int], *,
                       channel_order: str = "IUV") -> np.ndarray:
    """[T, H, W, 2] float32 (U, V) in [-1, 1] from DensePose IUV images.

    ``paths``: image files (or a folder of them, read in natural order, or one file). Each
    is an 8-bit 3-channel image holding I = body part 0..24 (0 = background) and U, V in
    0..255. ``channel_order`` says how the channels are stored: "IUV", or "VUI" for
    DensePose's PNG dumps written by OpenCV (BGR). The images are resized with nearest
    neighbour to ``size`` (interpolating part indices or UVs across part borders would be
    meaningless); U, V are scaled to [-1, 1] and the background is -1 in both.
    """
    order = channel_order.upper()
    if order not in ("IUV", "VUI"):
        raise ConfigError(f"channel_order must be 'IUV' or 'VUI', got {channel_order!r}")
    ci, cu, cv = order.index("I"), order.index("U"), order.index("V")
    h, w = _hw(size)
    from PIL import Image, UnidentifiedImageError

    out = []
    for path in _image_paths(paths):
        try:
            with Image.open(path) as im:
                arr = np.asarray(im)
        except FileNotFoundError:
            raise PoseFileError(f"{path}: no such DensePose IUV image") from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise PoseFileError(f"{path}: cannot be read as an image ({e})") from None
        channels = 1 if arr.ndim == 2 else arr.shape[-1]
        if arr.ndim not in (2, 3) or channels != 3:
            raise PoseFileError(f"{path}: has {channels} channel(s); a DensePose IUV image "
                                "needs exactly 3 (I, U, V)")
        if arr.dtype != np.uint8:
            raise PoseFileError(f"{path}: pixel type {arr.dtype}; expected 8-bit channels")
        arr = _nearest_resize(arr, h, w)
        part = arr[..., ci]
        if part.max() > 24:
            raise PoseFileError(f"{path}: part index channel reaches {int(part.max())} > 24; "
                                f"is channel_order={channel_order!r} right?")
        uv = to_unit_range(np.stack([arr[..., cu], arr[..., cv]], -1))
        uv[part == 0] = -1.0
        out.append(uv)
    return np.stack(out).astype(np.float32)


# ----------------------------------------------------------------------------- windows


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
