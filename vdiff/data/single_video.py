"""One video (or one image) as a data source — what SinFusion trains on.

`SingleVideoSource(path)` loads the file once (a video file, a folder of frame
images, or a single image → one frame), optionally resizing the shorter side to
`resolution` while keeping the aspect ratio, and serves the whole clip at every
index, so the grain pipeline's random crops and flips give the training stream.
"""

from __future__ import annotations

import os

import numpy as np

from vdiff.data import video_io


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
                channels: int = 3) -> np.ndarray:
    """A video file, frame folder or image → uint8 [T, H, W, channels]."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such video or image: {path}")
    if os.path.isdir(path):
        frames = video_io.read_frame_folder(path)
    elif path.lower().endswith(video_io.IMAGE_EXTENSIONS):
        from PIL import Image

        with Image.open(path) as img:
            frames = np.asarray(img.convert("RGB"))[None]
    else:
        frames = video_io.decode_video(path, max_frames=max_frames, strict=False)
    if max_frames:
        frames = frames[:max_frames]
    frames = resize_short_side(frames, resolution)
    if channels == 1:
        weights = np.array([0.299, 0.587, 0.114], np.float32)
        frames = np.rint(frames.astype(np.float32) @ weights)[..., None].astype(np.uint8)
    return np.ascontiguousarray(frames)


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
                 channels: int = 3, length: int = 100_000):
        self.path = path
        self.frames = load_frames(path, resolution=resolution, max_frames=max_frames,
                                  channels=channels)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return {"video": self.frames, "label": np.int32(0)}

    def __repr__(self) -> str:
        return f"SingleVideoSource({self.path!r}, frames={self.frames.shape})"
