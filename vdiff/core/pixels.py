"""The one pixel convention: uint8 [0, 255] on disk and in datasets, float [−1, 1] in models.

Each function keeps the array library it is given (NumPy in, NumPy out; JAX in, JAX out), so
host-side data code and jitted model code share one definition.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_unit_range(x: Any) -> Any:
    """uint8 pixels (or floats on the same 0–255 scale) → float32 in [−1, 1]."""
    return x.astype(np.float32) / 127.5 - 1.0


def as_unit_range(x: Any) -> Any:
    """uint8 → float32 in [−1, 1]; any float array is taken as already in [−1, 1]."""
    return to_unit_range(x) if x.dtype == np.uint8 else x.astype(np.float32)


def to_uint8(x: Any) -> np.ndarray:
    """Float pixels in [−1, 1] → NumPy uint8 in [0, 255] (rounded, clipped)."""
    return np.clip(np.rint((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
