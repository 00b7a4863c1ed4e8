"""The one pixel convention: uint8 [0, 255] on disk and in datasets, float [−1, 1] in models.

The conversions keep the array library they are given (NumPy in, NumPy out; JAX in, JAX
out), so host-side data code and jitted model code share one definition. `load_image` (an
image file → [−1, 1]) and `resize_image` serve the command-line tools on the host.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from vdiff.errors import ConfigError


def to_unit_range(x: Any) -> Any:
    """uint8 pixels (or floats on the same 0–255 scale) → float32 in [−1, 1]."""
    return x.astype(np.float32) / 127.5 - 1.0


def as_unit_range(x: Any) -> Any:
    """uint8 → float32 in [−1, 1]; any float array is taken as already in [−1, 1]."""
    return to_unit_range(x) if x.dtype == np.uint8 else x.astype(np.float32)


def to_uint8(x: Any) -> np.ndarray:
    """Float pixels in [−1, 1] → NumPy uint8 in [0, 255] (rounded, clipped)."""
    return np.clip(np.rint((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def load_image(path: str, *, flag: str = "image") -> np.ndarray:
    """RGB float32 [H, W, 3] in [−1, 1] of the image file `path`; a missing or unreadable
    file is a one-line ConfigError naming `flag` (the command-line flag it came from)."""
    if not os.path.isfile(path):
        raise ConfigError(f"{flag} {path!r}: no such file")
    try:
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), np.float32)
    except Exception as e:  # noqa: BLE001 - any decoder failure is the user's file
        raise ConfigError(f"{flag} {path!r}: cannot read image ({e})") from None
    return to_unit_range(arr)


def resize_image(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Float RGB image [H, W, 3] in [−1, 1] resized to `hw` = (H′, W′), bicubic on its uint8
    pixels (exactly what resizing the decoded file would give)."""
    from PIL import Image

    out = Image.fromarray(to_uint8(img)).resize((hw[1], hw[0]), Image.Resampling.BICUBIC)
    return to_unit_range(np.asarray(out))
