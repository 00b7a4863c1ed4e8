"""Video files in and out: the ffmpeg from the imageio-ffmpeg wheel, gifs, frame folders, PNG grids.

`decode_video` is the dataset-preparation reader: it lets ffmpeg resize (area
filter, shorter side → R) and center-crop to R×R while decoding, and in strict
mode treats any decoder error as a corrupt file — a truncated AVI decodes
"successfully" with ffmpeg exit code 0 and only an error on stderr.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

import imageio.v3 as iio
import numpy as np

from vdiff.core.pixels import to_uint8  # noqa: F401 - re-exported for the writers here
from vdiff.errors import InputError


def _as_rgb(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be [T, H, W, 1|3], got shape {frames.shape}")
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mov", ".mkv", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

# Encoder arguments per container written by `write_video` (besides gif).
_ENCODERS = {
    ".mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "15"],
    ".avi": ["-c:v", "mpeg4", "-q:v", "3"],  # MPEG-4 part 2, as in UCF-101's xvid files
    ".webm": ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", "20", "-b:v", "0"],
    ".mov": ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "15"],
}


def write_video(path: str, frames: np.ndarray, *, fps: int = 8) -> None:
    """Writes uint8 [T, H, W, C] frames to mp4/avi/webm/mov (ffmpeg) or gif, by extension."""
    frames = _as_rgb(frames)
    ext = os.path.splitext(path)[1].lower()
    if ext in _ENCODERS:
        # Even sizes for 4:2:0 chroma.
        h, w = frames.shape[1:3]
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        _encode_ffmpeg(path, frames, fps, _ENCODERS[ext])
    elif ext == ".gif":
        iio.imwrite(path, frames, extension=".gif", duration=1000 / fps, loop=0)
    else:
        raise ValueError(f"unsupported video extension {ext!r} for {path}; "
                         f"use one of {', '.join(sorted(_ENCODERS) + ['.gif'])}")


class FFmpegNotFoundError(RuntimeError):
    """No ffmpeg binary: neither $IMAGEIO_FFMPEG_EXE, the imageio-ffmpeg wheel, nor PATH."""


def _ffmpeg() -> str:
    """Path of ffmpeg: $IMAGEIO_FFMPEG_EXE, the binary in the imageio-ffmpeg wheel, or PATH.

    Found by file lookup only: imageio-ffmpeg's own lookup test-runs candidates with a
    `preexec_fn` (see `_run_ffmpeg`).
    """
    if os.environ.get("IMAGEIO_FFMPEG_EXE"):
        return os.environ["IMAGEIO_FFMPEG_EXE"]
    found = []
    try:
        import imageio_ffmpeg

        bin_dir = os.path.join(os.path.dirname(imageio_ffmpeg.__file__), "binaries")
        found = [f for f in sorted(glob.glob(os.path.join(bin_dir, "ffmpeg*")))
                 if os.access(f, os.X_OK)]
    except ImportError:
        pass
    found = found or [shutil.which("ffmpeg") or ""]
    if not found[0]:
        raise FFmpegNotFoundError("no ffmpeg found: reinstall imageio-ffmpeg or set "
                                  "IMAGEIO_FFMPEG_EXE")
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


def _encode_ffmpeg(path: str, frames: np.ndarray, fps: int, codec_args: list[str]) -> None:
    h, w = frames.shape[1:3]
    _run_ffmpeg(["-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                 "-r", str(fps), "-i", "-", "-an", *codec_args, "-y", path],
                data=np.ascontiguousarray(frames).tobytes())


def read_video(path: str) -> np.ndarray:
    """Reads a video file to uint8 [T, H, W, 3]; a one-line InputError if it cannot be decoded."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such video file: {path}")
    try:
        if path.lower().endswith(".mp4"):
            return _read_mp4_ffmpeg(path)
        frames = iio.imread(path, index=None)
    except Exception as e:  # noqa: BLE001 - decoders raise many types
        detail = [line for line in str(e).splitlines() if line.strip()][-1:] or [""]
        raise InputError(f"could not decode video {path}: {type(e).__name__}: {detail[0]}") from e
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    return frames[..., :3]


def probe_size(path: str) -> tuple[int, int]:
    """(height, width) of the first video stream, from ffmpeg's stream description."""
    _, info = _run_ffmpeg(["-i", path, "-frames:v", "1", "-f", "null", "-"])
    match = re.search(r"Video: [^\n]*?, (\d+)x(\d+)[\s,\[]", info)
    if not match:
        raise ValueError("no video stream")
    return int(match.group(2)), int(match.group(1))


def _read_mp4_ffmpeg(path: str) -> np.ndarray:
    h, w = probe_size(path)
    raw, _ = _run_ffmpeg(["-loglevel", "error", "-i", path, "-f", "rawvideo", "-pix_fmt",
                          "rgb24", "-"])
    if not raw or len(raw) % (h * w * 3):
        raise ValueError("no frames decoded")
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


class DecodeError(InputError):
    """A file that is not a (fully) decodable video; the message is the reason."""


def decode_video(path: str, *, resolution: int = 0, max_frames: int = 0,
                 strict: bool = True) -> np.ndarray:
    """Decodes a video file to uint8 [T, R, R, 3]: shorter side resized to R, center crop.

    resolution=0 keeps the native size. max_frames > 0 keeps only the first frames.
    strict: any decoder error (truncated or damaged stream) raises DecodeError instead
    of returning the frames that did decode. Any format the bundled ffmpeg reads works
    (mp4, avi, webm, mov, mkv, gif).
    """
    if not os.path.isfile(path):
        raise DecodeError("not a file")
    if os.path.getsize(path) == 0:
        raise DecodeError("zero-byte file")
    if resolution:
        r = int(resolution)
        h, w = r, r
        # Shorter side → r (the other rounded to even), then the central r×r.
        vf = [f"scale=w='if(gt(iw,ih),-2,{r})':h='if(gt(iw,ih),{r},-2)':flags=area",
              f"crop={r}:{r}"]
    else:
        try:
            h, w = probe_size(path)
        except ValueError as e:
            raise DecodeError(f"cannot read: {e}") from None
        vf = []
    # passthrough: each decoded frame once (no duplicates to fill a constant rate, e.g. gifs).
    args = ["-loglevel", "error", "-nostdin", "-i", path, "-an", "-fps_mode", "passthrough"]
    if vf:
        args += ["-vf", ",".join(vf)]
    if max_frames:
        args += ["-frames:v", str(int(max_frames))]
    try:
        raw, err = _run_ffmpeg(args + ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
    except ValueError as e:
        raise DecodeError(f"cannot decode: {e}") from None
    # "[mpeg4 @ 0x55…] illegal dc vlc" → "mpeg4: illegal dc vlc"
    err_lines = [re.sub(r"^\[(\S+) @ 0x[0-9a-f]+\]\s*", r"\1: ", x.strip())
                 for x in err.splitlines() if x.strip()]
    if strict and err_lines:
        raise DecodeError(f"decoder error (truncated or damaged file?): {err_lines[0]}")
    if not raw or len(raw) % (h * w * 3):
        raise DecodeError("no frames decoded")
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


def resize_center_crop(frame: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [H, W, C] → [R, R, C]: shorter side to R (area/box filter), central crop."""
    from PIL import Image

    img = Image.fromarray(frame)
    w, h = img.size
    scale = resolution / min(h, w)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    return np.asarray(img.crop((left, top, left + resolution, top + resolution)))


def read_frame_folder(folder: str, *, resolution: int = 0) -> np.ndarray:
    """A directory of frame images (sorted by name) → uint8 [T, R, R, 3]."""
    from PIL import Image

    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise DecodeError("no frame images in folder")
    frames = []
    for name in names:
        try:
            with Image.open(os.path.join(folder, name)) as img:
                frame = np.asarray(img.convert("RGB"))
        except Exception as e:  # noqa: BLE001 - PIL raises many types
            raise DecodeError(f"unreadable frame {name}: {type(e).__name__}") from None
        frames.append(resize_center_crop(frame, resolution) if resolution else frame)
    if len({f.shape for f in frames}) > 1:
        raise DecodeError("frames have different sizes")
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
