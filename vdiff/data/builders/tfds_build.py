"""Building a TFDS dataset where TensorFlow is not installed (vdiff never installs it).

TFDS shuffles a split's serialized examples in memory up to `shuffle.MAX_MEM_BUFFER_SIZE`
(1 GB) and spills the rest to temporary bucket files through `tf.io.gfile`, which imports
TensorFlow. Without it, any split larger than 1 GB fails at that spill ("Failed to import
TensorFlow"): real UCF-101 at 64 px is several GB of JPEG frames, moving digits `large`
about 1 GB. vdiff shuffles when reading (grain), so without TensorFlow the build keeps the
whole split in memory instead: peak memory ≈ the split's serialized size. With TensorFlow
installed TFDS's own spill works and is left alone.

TFDS also prints "Downloading and preparing dataset Unknown size ..." for builds that
download nothing, draws progress bars that are noise in a plain log, and warns that the
folder of a dataset not built yet "has no dataset_info.json". Builds here log one line of
their own instead, and the builders report progress through `vdiff.progress`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import sys
from typing import Any, Iterator

_LOG = logging.getLogger(__name__)


class _NoMissingInfoWarning(logging.Filter):
    """Drops TFDS's "Variant folder ... has no dataset_info.json" (a dataset not built yet)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("Variant folder") and
                    "dataset_info.json" in record.getMessage())


def _quiet_tfds_warnings() -> None:
    absl_logger = logging.getLogger("absl")  # TFDS logs through absl
    if not any(isinstance(f, _NoMissingInfoWarning) for f in absl_logger.filters):
        absl_logger.addFilter(_NoMissingInfoWarning())


_quiet_tfds_warnings()


@contextlib.contextmanager
def _tfds_console_off() -> Iterator[None]:
    """TFDS's stdout prints and its progress bars off for the duration."""
    from tensorflow_datasets.core.utils import tqdm_utils

    bars = getattr(tqdm_utils, "_active", True)
    tqdm_utils.display_progress_bar(False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        tqdm_utils.display_progress_bar(bars)


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


def download_and_prepare(builder: Any, *, source: str = "", **kwargs: Any) -> None:
    """`builder.download_and_prepare(**kwargs)` that works for splits over 1 GB without
    TensorFlow and logs one line of its own instead of TFDS's console text (module doc)."""
    name = f"{builder.name}/{builder.builder_config.name}"
    _LOG.info("building dataset %s%s in %s", name, f" from {source}" if source else "",
              builder.data_dir)
    with in_memory_shuffle(), _tfds_console_off():
        builder.download_and_prepare(**kwargs)
    _LOG.info("dataset %s ready in %s", name, builder.data_dir)
