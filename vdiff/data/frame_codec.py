"""How prepared datasets store frames: one JPEG (or PNG) per frame.

Per-frame encoding keeps random access cheap — a 16-frame clip decodes 16 small
images, not the whole video — and keeps UCF-101 at 64 px around 6 GB instead of
~30 GB of raw uint8. JPEG at quality 95 is far below the loss already in UCF's
xvid sources; PNG is there for lossless needs (synthetic data, tests).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

FORMATS = ("jpeg", "png")


def encode_frames(frames: np.ndarray, *, fmt: str = "jpeg", quality: int = 95) -> list[bytes]:
    """uint8 [T, H, W, C] (C = 1 or 3) → one encoded image per frame."""
    if fmt not in FORMATS:
        raise ValueError(f"frame format must be one of {FORMATS}, got {fmt!r}")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be uint8 [T, H, W, 1|3], got {frames.dtype} "
                         f"{frames.shape}")
    out = []
    for frame in frames:
        buf = io.BytesIO()
        img = Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame)
        if fmt == "jpeg":
            img.save(buf, format="JPEG", quality=quality, subsampling=0)
        else:
            img.save(buf, format="PNG", compress_level=1)
        out.append(buf.getvalue())
    return out


def decode_frames(encoded: list[bytes], indices=None, *, channels: int = 3) -> np.ndarray:
    """Encoded frames (all, or those at `indices`) → uint8 [T, H, W, channels]."""
    picked = encoded if indices is None else [encoded[int(i)] for i in indices]
    mode = "L" if channels == 1 else "RGB"
    frames = []
    for data in picked:
        with Image.open(io.BytesIO(data)) as img:
            frames.append(np.asarray(img.convert(mode)))
    out = np.stack(frames)
    return out[..., None] if channels == 1 else out
