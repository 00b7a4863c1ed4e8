"""Writing and reading sample videos: mp4 (ffmpeg from the imageio-ffmpeg wheel), gif, PNG grids."""

from __future__ import annotations

import contextlib
import os
import warnings

import imageio.v3 as iio
import numpy as np


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float pixels in [−1, 1] → uint8 in [0, 255] (clipped)."""
    return np.clip(np.rint((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _as_rgb(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be [T, H, W, 1|3], got shape {frames.shape}")
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def write_video(path: str, frames: np.ndarray, *, fps: int = 8) -> None:
    """Writes uint8 [T, H, W, C] frames to `.mp4` (H.264) or `.gif`, chosen by extension."""
    frames = _as_rgb(frames)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".mp4":
        # Even sizes for yuv420p; small sizes are fine with macro_block_size=1.
        h, w = frames.shape[1:3]
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        _write_mp4_ffmpeg(path, frames, fps)
    elif ext == ".gif":
        iio.imwrite(path, frames, extension=".gif", duration=1000 / fps, loop=0)
    else:
        raise ValueError(f"unsupported video extension {ext!r} for {path}; use .mp4 or .gif")


def _write_mp4_ffmpeg(path: str, frames: np.ndarray, fps: int) -> None:
    import imageio_ffmpeg

    h, w = frames.shape[1:3]
    with _ffmpeg_subprocess():
        writer = imageio_ffmpeg.write_frames(path, (w, h), fps=fps, codec="libx264",
                                             pix_fmt_out="yuv420p", macro_block_size=1,
                                             ffmpeg_log_level="error")
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()


@contextlib.contextmanager
def _ffmpeg_subprocess():
    """ffmpeg runs as a child process; Python warns about forking a JAX process, but the
    child execs ffmpeg at once and never touches JAX state, so the warning is noise here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                                category=RuntimeWarning)
        yield


def read_video(path: str) -> np.ndarray:
    """Reads a video file to uint8 [T, H, W, 3]; a clear ValueError if it cannot be decoded."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such video file: {path}")
    try:
        if path.lower().endswith(".mp4"):
            return _read_mp4_ffmpeg(path)
        frames = iio.imread(path, index=None)
    except Exception as e:  # noqa: BLE001 - decoders raise many types
        detail = [line for line in str(e).splitlines() if line.strip()][-1:] or [""]
        raise ValueError(f"could not decode video {path}: {type(e).__name__}: {detail[0]}") from e
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    return frames[..., :3]


def _read_mp4_ffmpeg(path: str) -> np.ndarray:
    import imageio_ffmpeg

    with _ffmpeg_subprocess():
        reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
        meta = reader.__next__()
        w, h = meta["size"]
        frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]
    if not frames:
        raise ValueError("no frames")
    return np.stack(frames)


def write_grid_png(path: str, videos: np.ndarray, *, border: int = 1) -> None:
    """One PNG for uint8 [N, T, H, W, C]: a row per video, a column per frame, 1-px borders."""
    videos = np.asarray(videos)
    if videos.ndim != 5:
        raise ValueError(f"videos must be [N, T, H, W, C], got shape {videos.shape}")
    n, t, h, w, _ = videos.shape
    rgb = np.stack([_as_rgb(v) for v in videos])
    grid = np.full((n * (h + border) + border, t * (w + border) + border, 3), 255, np.uint8)
    for i in range(n):
        for j in range(t):
            y, x = border + i * (h + border), border + j * (w + border)
            grid[y:y + h, x:x + w] = rgb[i, j]
    iio.imwrite(path, grid, extension=".png")
