"""Building a TFDS dataset where TensorFlow is not installed (vdiff never installs it).

TFDS shuffles a split's serialized examples in memory up to `shuffle.MAX_MEM_BUFFER_SIZE`
(1 GB) and spills the rest to temporary bucket files through `tf.io.gfile`, which imports
TensorFlow. Without it, any split larger than 1 GB fails at that spill ("Failed to import
TensorFlow"): real UCF-101 at 64 px is several GB of JPEG frames, moving digits `large`
about 1 GB. vdiff shuffles when reading (grain), so without TensorFlow the build keeps the
whole split in memory instead: peak memory ≈ the split's serialized size. With TensorFlow
installed TFDS's own spill works and is left alone.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from typing import Any, Iterator


@contextlib.contextmanager
def in_memory_shuffle() -> Iterator[None]:
    """Lifts TFDS's in-memory shuffle limit for the duration (no-op when TensorFlow is
    importable, or for a TFDS without that limit)."""
    from tensorflow_datasets.core import shuffle

    if importlib.util.find_spec("tensorflow") is not None or not hasattr(
            shuffle, "MAX_MEM_BUFFER_SIZE"):
        yield
        return
    limit = shuffle.MAX_MEM_BUFFER_SIZE
    shuffle.MAX_MEM_BUFFER_SIZE = sys.maxsize
    try:
        yield
    finally:
        shuffle.MAX_MEM_BUFFER_SIZE = limit


def download_and_prepare(builder: Any, **kwargs: Any) -> None:
    """`builder.download_and_prepare(**kwargs)` that works for splits over 1 GB without
    TensorFlow (module docstring)."""
    with in_memory_shuffle():
        builder.download_and_prepare(**kwargs)
