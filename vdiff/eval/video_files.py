"""Loading sets of videos for the evaluation CLIs: a folder of video files, or `.npz` files.

A *source* is one of
  * a folder: every video file in it (mp4, avi, gif, webm, mov; sorted by name) is one
    video, every `.npz` file in it holds several (see below);
  * a single `.npz` file: the array under key `videos`, or its only array;
    uint8 [N, T, H, W, C] in [0, 255] or float in [−1, 1] (a single [T, H, W, C] video
    is accepted too), C = 1 or 3;
  * a single video file.
Everything is returned as uint8 RGB (floats are mapped with `to_uint8`, grayscale is
repeated to 3 channels). Problems the user can fix raise InputError/FileNotFoundError with
a message that names the file and says what to do.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from vdiff.data import video_io
from vdiff.errors import InputError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".gif", ".webm", ".mov")
FLOAT_RANGE_SLACK = 1e-3


def _to_uint8_rgb(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 or [−1, 1] float [..., C] with C in (1, 3) → uint8 [..., 3]."""
    if x.shape[-1] not in (1, 3):
        raise InputError(f"{where}: last axis must be 1 or 3 channels, got shape {x.shape}")
    if x.dtype.kind == "f":
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if lo < -1 - FLOAT_RANGE_SLACK or hi > 1 + FLOAT_RANGE_SLACK or not np.isfinite(lo + hi):
            raise InputError(f"{where}: float videos must be in [-1, 1], got range "
                             f"[{lo:.3g}, {hi:.3g}] (for [0, 1] data use 2 * x - 1)")
        x = video_io.to_uint8(x)
    elif x.dtype != np.uint8:
        raise InputError(f"{where}: videos must be uint8 or float in [-1, 1], got {x.dtype}")
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def load_npz(path: str) -> np.ndarray:
    """uint8 [N, T, H, W, 3] from an `.npz` (key `videos`, or its single array)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.keys()}
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:  # ValueError: not an .npz
        raise InputError(f"could not read {path} as .npz: {type(e).__name__}: {e}") from e
    if "videos" in arrays:
        x = arrays["videos"]
    elif len(arrays) == 1:
        (x,) = arrays.values()
    else:
        raise InputError(f"{path}: has arrays {list(arrays)}; name the videos array 'videos'")
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5:
        raise InputError(f"{path}: videos must be [N, T, H, W, C], got shape {x.shape}")
    return _to_uint8_rgb(x, path)


def read_one(path: str) -> np.ndarray:
    """One video file → uint8 [T, H, W, 3]."""
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder; give a video file")
    if path.lower().endswith(".npz"):
        videos = load_npz(path)
        if len(videos) != 1:
            raise InputError(f"{path} holds {len(videos)} videos; give a file with one")
        return videos[0]
    if not path.lower().endswith(VIDEO_EXTENSIONS):
        raise InputError(f"{path}: unsupported file type; use one of "
                         f"{', '.join(VIDEO_EXTENSIONS)} or .npz")
    return _to_uint8_rgb(video_io.read_video(path), path)


def load_set(source: str, *, max_videos: int | None = None
             ) -> tuple[list[np.ndarray], list[str]]:
    """All videos of a source as uint8 [T, H, W, 3] arrays, with a name for each."""
    if not os.path.exists(source):
        raise FileNotFoundError(f"no such file or folder: {source}")
    if os.path.isdir(source):
        files = sorted(f for f in os.listdir(source)
                       if f.lower().endswith(VIDEO_EXTENSIONS + (".npz",)))
        if not files:
            raise InputError(f"{source} holds no videos ({', '.join(VIDEO_EXTENSIONS)} or "
                             ".npz files)")
        paths = [os.path.join(source, f) for f in files]
    else:
        paths = [source]
    videos, names = [], []
    for path in paths:
        if max_videos and len(videos) >= max_videos:
            break
        if path.lower().endswith(".npz"):
            batch = load_npz(path)
            videos += list(batch)
            names += [f"{path}[{i}]" for i in range(len(batch))]
        else:
            videos.append(read_one(path))
            names.append(path)
    if max_videos:
        videos, names = videos[:max_videos], names[:max_videos]
    return videos, names


def stack_clips(videos: list[np.ndarray], names: list[str], *, num_frames: int | None,
                what: str = "videos") -> np.ndarray:
    """The first `num_frames` frames of each video (all if None), stacked [N, T, H, W, 3]."""
    if not videos:
        raise InputError(f"{what}: no videos")
    num_frames = num_frames or min(len(v) for v in videos)
    for v, name in zip(videos, names):
        if len(v) < num_frames:
            raise InputError(f"{name} has {len(v)} frames, fewer than num_frames={num_frames}; "
                             "pass a smaller --num_frames or drop the video")
    size = videos[0].shape[1:3]
    for v, name in zip(videos, names):
        if v.shape[1:3] != size:
            raise InputError(f"{what}: {name} is {v.shape[1]}x{v.shape[2]} but {names[0]} is "
                             f"{size[0]}x{size[1]}; resize all videos to one size")
    return np.stack([v[:num_frames] for v in videos])


def load_videos(source: str, *, num_frames: int | None = None,
                max_videos: int | None = None) -> np.ndarray:
    """A source as uint8 [N, num_frames, H, W, 3] (see the module docstring)."""
    videos, names = load_set(source, max_videos=max_videos)
    return stack_clips(videos, names, num_frames=num_frames, what=source)
