"""Pose inputs read from disk: OpenPose keypoint JSON (one frame, or a sequence as a folder
or one file) and DensePose IUV images (conventions: `vdiff.data.pose`)."""

from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence

import numpy as np

from vdiff.errors import ConfigError
from vdiff.core.pixels import to_unit_range
from vdiff.data.pose_keypoints import BODY25_NAMES, size_hw

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class PoseFileError(ConfigError):
    """A keypoint or DensePose file cannot be read; the message names the file and why."""


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
    h, w = size_hw(size)
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
