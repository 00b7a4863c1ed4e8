"""Input pipeline: tfds ArrayRecord sources read through grain, one shard per process.

    it = make_iterator(config.data, split="train", seed=0, global_batch_size=128,
                       process_index=jax.process_index(), process_count=jax.process_count())
    batch = next(it)            # host-local numpy dict
    state = it.get_state()      # JSON-serializable; it.set_state(state) resumes exactly

Batches hold `video` uint8 [B, T, R, R, C] and `label` int32 [B]; with
`num_images_per_video` K > 0 also `images` uint8 [B, K, R, R, C] (still frames of
other random videos of the same split and shard) and `image_labels` int32 [B, K],
for VDM's joint image-video training. Every element is a pure function of
(seed, position), so the stream is deterministic and resumable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import grain
import numpy as np

from vdiff.errors import ConfigError


class DatasetNotFoundError(RuntimeError):
    """The dataset is not prepared in the data dir; the message says how to prepare it."""


def default_data_dir() -> str:
    return os.environ.get("VDIFF_DATA_DIR") or os.path.join("~", ".cache", "vdiff", "datasets")


def resolve_data_dir(data_config: Any) -> str:
    return os.path.abspath(os.path.expanduser(data_config.data_dir or default_data_dir()))


def _moving_digits_builder(data_config: Any):
    from vdiff.data.builders.moving_digits import MovingDigits

    data_dir = resolve_data_dir(data_config)
    builder = MovingDigits(config=data_config.builder_config, data_dir=data_dir,
                           file_format="array_record")
    if not builder.is_prepared():
        if not data_config.build_if_missing:
            raise DatasetNotFoundError(
                f"moving_digits/{data_config.builder_config} is not prepared in {data_dir}. "
                f"Set --config.data.build_if_missing=true to build it (about a minute, no "
                f"download), or point --config.data.data_dir at a directory that has it.")
        logging.info("building moving_digits/%s in %s (first use; no download needed)",
                     data_config.builder_config, data_dir)
        builder.download_and_prepare()
    return builder


def _ucf101_builder(data_config: Any):
    raise DatasetNotFoundError(
        f"UCF-101 is not prepared in {resolve_data_dir(data_config)}. vdiff reads a local "
        f"copy of UCF-101 (UCF101.rar from the dataset's site, extracted) through its own "
        f"TensorFlow-free builder, which is not part of this release yet. Until it is, train "
        f"on the embedded data with --config=configs/vdm_digits.py.")


BUILDERS: dict[str, Callable[[Any], Any]] = {
    "moving_digits": _moving_digits_builder,
    "ucf101": _ucf101_builder,
}


def get_data_source(data_config: Any, *, split: str):
    """Random-access source (len, getitem → dict of numpy) of one split, built if allowed."""
    if data_config.name not in BUILDERS:
        raise ConfigError(f"unknown data.name {data_config.name!r}; known: {sorted(BUILDERS)}")
    builder = BUILDERS[data_config.name](data_config)
    if split not in builder.info.splits:
        raise ConfigError(f"split {split!r} not in {data_config.name} "
                          f"(has {sorted(builder.info.splits)})")
    return builder.as_data_source(split=split)


def _avg_pool(video: np.ndarray, factor: int) -> np.ndarray:
    """uint8 [..., H, W, C] → uint8 [..., H/f, W/f, C] by block averaging."""
    if factor == 1:
        return video
    *lead, h, w, c = video.shape
    x = video.reshape(*lead, h // factor, factor, w // factor, factor, c).astype(np.float32)
    return np.rint(x.mean(axis=(-4, -2))).astype(np.uint8)


class _Preprocess:
    """Crops time, resizes space and (optionally) attaches K images from other examples."""

    def __init__(self, data_config: Any, source: Any, stored_shape: tuple[int, ...]):
        t_stored, size = stored_shape[0], stored_shape[1]
        self.num_frames = data_config.num_frames
        if self.num_frames > t_stored:
            raise ConfigError(f"data.num_frames={self.num_frames} but the stored videos have "
                              f"only {t_stored} frames")
        if size % data_config.resolution:
            raise ConfigError(f"data.resolution={data_config.resolution} must divide the "
                              f"stored frame size {size}")
        if data_config.temporal_crop not in ("first", "random"):
            raise ConfigError("data.temporal_crop must be 'first' or 'random', got "
                              f"{data_config.temporal_crop!r}")
        if stored_shape[-1] != data_config.channels:
            raise ConfigError(f"data.channels={data_config.channels} but the stored videos have "
                              f"{stored_shape[-1]} channels")
        self.random_crop = data_config.temporal_crop == "random"
        self.t_stored = t_stored
        self.factor = size // data_config.resolution
        self.k = data_config.num_images_per_video
        self.source = source

    def __call__(self, example: dict[str, np.ndarray], rng: np.random.Generator):
        start = int(rng.integers(self.t_stored - self.num_frames + 1)) if self.random_crop else 0
        video = example["video"][start:start + self.num_frames]
        out = {"video": _avg_pool(video, self.factor),
               "label": np.asarray(example["label"], np.int32)}
        if self.k:
            idx = rng.integers(len(self.source), size=self.k)
            frames = rng.integers(self.t_stored, size=self.k)
            others = [self.source[int(i)] for i in idx]
            out["images"] = _avg_pool(
                np.stack([o["video"][f] for o, f in zip(others, frames)]), self.factor)
            out["image_labels"] = np.asarray([o["label"] for o in others], np.int32)
        return out


def make_iterator(data_config: Any, *, split: str, seed: int, global_batch_size: int,
                  process_index: int = 0, process_count: int = 1, shuffle: bool = True):
    """Infinite, deterministic, checkpointable iterator of host-local numpy batches.

    Process p reads examples p, p+n, p+2n, … of the split (n = process_count), so
    shards are disjoint; each epoch is reshuffled deterministically from `seed`.
    """
    if global_batch_size % process_count:
        raise ConfigError(f"global batch size {global_batch_size} is not divisible by "
                          f"{process_count} processes")
    local_batch = global_batch_size // process_count
    source = get_data_source(data_config, split=split)
    shard = grain.MapDataset.source(source)[process_index::process_count]
    if len(shard) == 0:
        raise DatasetNotFoundError(f"split {split!r} of {data_config.name} has no examples "
                                   f"for process {process_index} of {process_count}")
    preprocess = _Preprocess(data_config, shard, source[0]["video"].shape)
    ds = shard.shuffle(seed=seed) if shuffle else shard
    ds = ds.repeat(None).random_map(preprocess, seed=seed + 1)
    ds = ds.batch(local_batch, drop_remainder=True)
    options = grain.ReadOptions(num_threads=max(int(data_config.read_threads), 1),
                                prefetch_buffer_size=2)
    return iter(ds.to_iter_dataset(options))
