"""Writing and reading sample videos: mp4 (ffmpeg from the imageio-ffmpeg wheel), gif, PNG grids."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

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


def _ffmpeg() -> str:
    """Path of ffmpeg: $IMAGEIO_FFMPEG_EXE, the binary in the imageio-ffmpeg wheel, or PATH.

    Found by file lookup only: imageio-ffmpeg's own lookup test-runs candidates with a
    `preexec_fn` (see `_run_ffmpeg`).
    """
    if os.environ.get("IMAGEIO_FFMPEG_EXE"):
        return os.environ["IMAGEIO_FFMPEG_EXE"]
    import imageio_ffmpeg

    bin_dir = os.path.join(os.path.dirname(imageio_ffmpeg.__file__), "binaries")
    found = sorted(glob.glob(os.path.join(bin_dir, "ffmpeg*")))
    found = [f for f in found if os.access(f, os.X_OK)] or [shutil.which("ffmpeg") or ""]
    if not found[0]:
        raise RuntimeError("no ffmpeg found: reinstall imageio-ffmpeg or set IMAGEIO_FFMPEG_EXE")
    return found[0]


def _run_ffmpeg(args: list[str], *, data: bytes | None = None) -> tuple[bytes, str]:
    """Runs the bundled ffmpeg; returns (stdout, stderr) or raises ValueError with its error.

    Spawned with plain `subprocess.run` rather than imageio-ffmpeg's helpers: those pass a
    Python `preexec_fn`, which runs Python code between fork and exec and can deadlock in a
    multithreaded (JAX, grain, orbax) process — seen here as a sample writer that hung.
    """
    proc = subprocess.run([_ffmpeg(), "-hide_banner", *args], input=data,
                          stdin=None if data is not None else subprocess.DEVNULL,
                          capture_output=True, check=False)
    if proc.returncode != 0:
        lines = [x for x in proc.stderr.decode(errors="replace").splitlines() if x.strip()]
        raise ValueError(lines[-1] if lines else f"ffmpeg exited with {proc.returncode}")
    return proc.stdout, proc.stderr.decode(errors="replace")


def _write_mp4_ffmpeg(path: str, frames: np.ndarray, fps: int) -> None:
    h, w = frames.shape[1:3]
    _run_ffmpeg(["-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                 "-r", str(fps), "-i", "-", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                 "-crf", "15", "-y", path], data=np.ascontiguousarray(frames).tobytes())


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
    _, info = _run_ffmpeg(["-i", path, "-f", "null", "-"])
    match = re.search(r"Video: [^\n]*?, (\d+)x(\d+)[\s,\[]", info)
    if not match:
        raise ValueError("no video stream")
    w, h = int(match.group(1)), int(match.group(2))
    raw, _ = _run_ffmpeg(["-loglevel", "error", "-i", path, "-f", "rawvideo", "-pix_fmt",
                          "rgb24", "-"])
    if not raw or len(raw) % (h * w * 3):
        raise ValueError("no frames decoded")
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


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
