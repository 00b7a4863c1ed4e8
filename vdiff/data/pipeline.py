"""Input pipeline: tfds ArrayRecord sources (or one video) read through grain, one shard per process.

    it = make_iterator(config.data, split="train", seed=0, global_batch_size=128,
                       process_index=jax.process_index(), process_count=jax.process_count())
    batch = next(it)            # host-local numpy dict
    state = it.get_state()      # JSON-serializable; it.set_state(state) resumes exactly

Batches hold `video` uint8 [B, T, R, R, C] and `label` int32 [B]; with
`num_images_per_video` K > 0 also `images` uint8 [B, K, R, R, C] (single frames of
other videos) and `image_labels` int32 [B, K], for VDM's joint image-video training.
Where the K frames come from (`data.joint_images_from`):
  'batch'    (default) random frames of the *other* videos of the same host batch: each
             example also decodes K random frames of its own video, and a batch step
             hands them to other rows. Costs K small image decodes per clip.
  'dataset'  frames of K random videos of the shard: K extra record reads per clip
             (≈3× slower at K = 8), fully independent of the batch.
Each element is a pure function of (seed, position): the stream is deterministic and
resumable.

Per example: a clip of `num_frames` frames `frame_stride` apart at a random (or
the first) start — decoding only those frames — then block-average pooling to
`resolution` (or, with `crop_fraction` < 1, a random crop of that fraction of the
frame), then an optional random horizontal flip.

Pixels stay uint8 here and become floats in [−1, 1] on the device (the method's
first op): 4× less host work and host→device traffic than shipping float32.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import grain
import numpy as np

from vdiff.data import frame_codec, moving_digits
from vdiff.data.builders import tfds_build
from vdiff.errors import ConfigError, UserError


class DatasetNotFoundError(UserError, RuntimeError):
    """The dataset is not prepared in the data dir; the message says how to prepare it."""


def default_data_dir() -> str:
    return os.environ.get("VDIFF_DATA_DIR") or os.path.join("~", ".cache", "vdiff", "datasets")


def resolve_data_dir(data_config: Any) -> str:
    return os.path.abspath(os.path.expanduser(data_config.data_dir or default_data_dir()))


# -- builders -----------------------------------------------------------------

def _moving_digits_builder(data_config: Any):
    from vdiff.data.builders.moving_digits import MovingDigits

    data_dir = resolve_data_dir(data_config)
    builder = MovingDigits(config=data_config.builder_config or "default", data_dir=data_dir,
                           file_format="array_record")
    if not builder.is_prepared():
        if not data_config.build_if_missing:
            raise DatasetNotFoundError(
                f"moving_digits/{builder.builder_config.name} is not prepared in {data_dir}. "
                f"Run `python -m vdiff.data.prepare digits --data_dir={data_dir}` or set "
                f"--config.data.build_if_missing=true (about a minute, no download).")
        builder = _build_once(builder, data_dir,
                              lambda: tfds_build.download_and_prepare(
                                  builder, source="scikit-learn's bundled digits"))
    return builder


def ucf101_config_name(data_config: Any) -> str:
    from vdiff.data.builders import ucf101

    return data_config.builder_config or ucf101.config_name(data_config.resolution,
                                                            data_config.ucf_split)


def _ucf101_builder(data_config: Any):
    from vdiff.data.builders import ucf101

    data_dir = resolve_data_dir(data_config)
    name = ucf101_config_name(data_config)
    known = [c.name for c in ucf101.UCF101.BUILDER_CONFIGS]
    if name not in known:
        raise ConfigError(f"no UCF-101 config {name!r} (data.resolution={data_config.resolution}"
                          f", data.ucf_split={data_config.ucf_split}); prepared configs are "
                          f"{known}: use resolution 64/128/256 and split 1/2/3, or set "
                          f"data.builder_config to a larger prepared resolution")
    builder = ucf101.UCF101(config=name, data_dir=data_dir, file_format="array_record")
    builder = _prepare_video_builder(builder, data_config, data_dir, cli=(
        f"python -m vdiff.data.prepare ucf101 --manual_dir=/path/to/UCF101 "
        f"--data_dir={data_dir} --resolution={builder.builder_config.resolution} "
        f"--split={builder.builder_config.split_number}"), what=f"UCF-101 ({name})")
    return builder


def _video_folder_builder(data_config: Any):
    from vdiff.data.builders import video_folder

    data_dir = resolve_data_dir(data_config)
    if not (data_config.folder_name or data_config.source_dir):
        raise ConfigError("data.name='video_folder' needs data.folder_name (the prepared "
                          "dataset's name) or data.source_dir (the folder of videos)")
    name = data_config.folder_name or os.path.basename(os.path.normpath(data_config.source_dir))
    config = video_folder.make_config(
        name, resolution=data_config.resolution,
        labels_from_subfolders=data_config.labels_from_subfolders)
    builder = video_folder.VideoFolder(config=config, data_dir=data_dir,
                                       file_format="array_record")
    flag = " --labels_from_subfolders" if data_config.labels_from_subfolders else ""
    builder = _prepare_video_builder(builder, data_config, data_dir, cli=(
        f"python -m vdiff.data.prepare folder --manual_dir=/path/to/videos --name={name} "
        f"--data_dir={data_dir} --resolution={data_config.resolution}{flag}"),
        what=f"video folder dataset {config.name}")
    return builder


def _prepare_video_builder(builder, data_config: Any, data_dir: str, *, cli: str, what: str):
    """The builder, prepared (from `data_config.source_dir` if missing and allowed)."""
    if builder.is_prepared():
        return builder
    if not (data_config.build_if_missing and data_config.source_dir):
        raise DatasetNotFoundError(
            f"{what} is not prepared in {data_dir}. Prepare it once with\n  {cli}\nor set "
            f"--config.data.source_dir=/path/to/source to prepare it on first use.")
    from vdiff.data.builders.video_base import PrepareOptions, prepare

    source = os.path.abspath(os.path.expanduser(data_config.source_dir))
    options = PrepareOptions(min_frames=max(data_config.min_frames, data_config.num_frames))
    return _build_once(builder, data_dir, lambda: logging.info(
        "prepared %s: %s", what, json.dumps(prepare(builder, source, options=options))))


def _build_once(builder, data_dir: str, build: Callable[[], None]):
    """Process 0 builds; other processes (sharing the data dir) wait for it to finish.
    Returns a builder constructed after the build, which reads the finished dataset."""
    import jax

    def reopened():
        return type(builder)(config=builder.builder_config, data_dir=data_dir,
                             file_format="array_record")

    if jax.process_index() == 0:
        # Separate jobs sharing one data dir (e.g. two runs started together) would both
        # build and the second rename of the finished dataset fails: one builds under an
        # exclusive file lock, the others wait on the lock and then find it prepared.
        import fcntl

        os.makedirs(data_dir, exist_ok=True)
        lock_path = os.path.join(data_dir, f".{builder.name}.build.lock")
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not reopened().is_prepared():
                logging.info("preparing %s in %s (first use)", builder.name, data_dir)
                build()
        return reopened()
    logging.info("process %d waiting for process 0 to prepare %s", jax.process_index(),
                 builder.name)
    while not builder.is_prepared():
        time.sleep(10)
        builder = reopened()
    return builder


def _single_video_source(data_config: Any):
    from vdiff.data.single_video import SingleVideoSource, segment

    if not data_config.source_dir:
        raise ConfigError("data.name='single_video' needs data.source_dir=PATH (a video file, "
                          "a folder of frames or an image)")
    return SingleVideoSource(os.path.expanduser(data_config.source_dir),
                             resolution=data_config.resolution, max_frames=data_config.max_frames,
                             channels=data_config.channels, **segment(data_config))


BUILDERS: dict[str, Callable[[Any], Any]] = {
    "moving_digits": _moving_digits_builder,
    "ucf101": _ucf101_builder,
    "video_folder": _video_folder_builder,
}
SOURCES = (*BUILDERS, "single_video")


def get_builder(data_config: Any):
    if data_config.name not in BUILDERS:
        raise ConfigError(f"unknown data.name {data_config.name!r}; known: {sorted(SOURCES)}")
    return BUILDERS[data_config.name](data_config)


def get_data_source(data_config: Any, *, split: str):
    """Random-access source (len, getitem → dict of numpy) of one split, built if allowed."""
    if data_config.name == "single_video":
        return _single_video_source(data_config)  # one clip: the same for every split
    return _split_source(get_builder(data_config), data_config, split)


def _split_source(builder, data_config: Any, split: str):
    if split.split("[")[0] not in builder.info.splits:  # TFDS slices: 'train[2000:]'
        raise ConfigError(f"split {split!r} not in {data_config.name} "
                          f"(has {sorted(builder.info.splits)})")
    return builder.as_data_source(split=split)


# -- per-example transforms -----------------------------------------------------

def _avg_pool(video: np.ndarray, factor: int) -> np.ndarray:
    """uint8 [..., H, W, C] → uint8 [..., H/f, W/f, C] by block averaging."""
    if factor == 1:
        return video
    *lead, h, w, c = video.shape
    x = video.reshape(*lead, h // factor, factor, w // factor, factor, c).astype(np.float32)
    return np.rint(x.mean(axis=(-4, -2))).astype(np.uint8)


def num_frames_of(example: dict[str, Any]) -> int:
    return int(example["num_frames"]) if "frames" in example else len(example["video"])


def frames_at(example: dict[str, Any], indices: np.ndarray, channels: int) -> np.ndarray:
    """The frames at `indices`, decoding only those for JPEG/PNG-stored datasets."""
    if "frames" in example:
        return frame_codec.decode_frames(example["frames"], indices, channels=channels)
    return np.asarray(example["video"])[indices]


def clip_indices(rng: np.random.Generator | None, total: int, num_frames: int,
                 stride: int) -> np.ndarray:
    """`num_frames` indices `stride` apart, at a random start (rng) or at 0 (rng=None).

    Videos too short for the stride use the largest stride that fits (never < 1).
    """
    if num_frames <= 0:
        return np.arange(total)
    stride = max(1, min(stride, (total - 1) // max(num_frames - 1, 1)))
    span = (num_frames - 1) * stride + 1
    start = int(rng.integers(total - span + 1)) if rng is not None else 0
    return start + stride * np.arange(num_frames)


class _Preprocess:
    """Example → clip, pooled/cropped and flipped; attaches K images from other examples."""

    def __init__(self, data_config: Any, source: Any, stored: dict[str, int]):
        d = data_config
        if d.temporal_crop not in ("first", "random"):
            raise ConfigError(f"data.temporal_crop must be 'first' or 'random', got "
                              f"{d.temporal_crop!r}")
        if d.frame_stride < 1:
            raise ConfigError(f"data.frame_stride must be ≥ 1, got {d.frame_stride}")
        if not 0 < d.crop_fraction <= 1:
            raise ConfigError(f"data.crop_fraction must be in (0, 1], got {d.crop_fraction}")
        self.num_frames, self.stride = d.num_frames, d.frame_stride
        self.random_start = d.temporal_crop == "random"
        self.crop_fraction, self.flip = d.crop_fraction, d.random_flip
        self.channels, self.k, self.source = d.channels, d.num_images_per_video, source
        if d.joint_images_from not in ("batch", "dataset"):
            raise ConfigError(f"data.joint_images_from must be 'batch' or 'dataset', got "
                              f"{d.joint_images_from!r}")
        self.from_batch = d.joint_images_from == "batch"
        self.label_from = d.get("label_from", "label")  # absent in configs saved before it
        if self.label_from not in ("label", "digit_set"):
            raise ConfigError(f"data.label_from must be 'label' or 'digit_set', got "
                              f"{self.label_from!r}")
        if self.label_from == "digit_set" and "labels" not in source[0]:
            raise ConfigError(f"data.label_from='digit_set' needs moving digits (per-digit "
                              f"'labels'); data.name={d.name!r} has none")
        # Single videos are resized at load (aspect kept); datasets are pooled here.
        self.factor = 1 if (d.crop_fraction < 1 or not d.resolution
                            or d.name == "single_video") else stored["size"] // d.resolution

    def _spatial(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.crop_fraction < 1:
            h, w = frames.shape[-3:-1]
            ch, cw = max(1, round(h * self.crop_fraction)), max(1, round(w * self.crop_fraction))
            y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
            frames = frames[..., y:y + ch, x:x + cw, :]
        else:
            frames = _avg_pool(frames, self.factor)
        if self.flip and rng.random() < 0.5:
            frames = frames[..., ::-1, :]
        return np.ascontiguousarray(frames)

    def __call__(self, example: dict[str, Any], rng: np.random.Generator):
        idx = clip_indices(rng if self.random_start else None, num_frames_of(example),
                           self.num_frames, self.stride)
        video = self._spatial(frames_at(example, idx, self.channels), rng)
        label = (moving_digits.digit_set_class(example["labels"])
                 if self.label_from == "digit_set" else example["label"])
        out = {"video": video, "label": np.asarray(label, np.int32)}
        if self.k and self.from_batch:  # donors for other rows (see _DonorImages)
            total = num_frames_of(example)
            frames = frames_at(example, rng.integers(total, size=self.k), self.channels)
            out["donor_images"] = np.stack([self._spatial(f, rng) for f in frames])
        elif self.k:
            images, labels = [], []
            for i in rng.integers(len(self.source), size=self.k):
                other = self.source[int(i)]
                frame = int(rng.integers(num_frames_of(other)))
                images.append(self._spatial(frames_at(other, [frame], self.channels)[0], rng))
                labels.append(other["label"])
            out["images"] = np.stack(images)
            out["image_labels"] = np.asarray(labels, np.int32)
        return out


class _DonorImages:
    """Batch step: row b's K images are donor frames of rows b+1, b+2, … (never b itself).

    Image j of row b comes from row (b + 1 + j mod (B − 1)) mod B, which is never b, so
    with B ≥ 2 every image is a frame of another video of the batch.
    """

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        donors = batch.pop("donor_images")  # [B, K, R, R, C]
        b, k = donors.shape[:2]
        rows = (np.arange(b)[:, None] + 1 + np.arange(k)[None, :] % (b - 1)) % b
        batch["images"] = donors[rows, np.arange(k)[None, :]]
        batch["image_labels"] = batch["label"][rows].astype(np.int32)
        return batch


def _stored_layout(source: Any, builder: Any) -> dict[str, int]:
    """Frame size, channels and shortest length of the stored data (for the config checks)."""
    first = source[0]
    if "frames" in first:  # a video builder's JPEG/PNG frames
        meta = dict(builder.info.metadata)
        size = frame_codec.decode_frames(first["frames"], [0]).shape[1]
        return {"size": size, "min_frames": int(meta.get("num_frames_min", num_frames_of(first))),
                "channels": 3}
    video = np.asarray(first["video"])
    return {"size": video.shape[1], "min_frames": len(video), "channels": video.shape[-1]}


def check_compatible(data_config: Any, stored: dict[str, int]) -> None:
    """Catches a prepared dataset that cannot give what the config asks, with the fix."""
    d = data_config
    if d.num_frames > stored["min_frames"]:
        raise ConfigError(
            f"data.num_frames={d.num_frames} but the shortest prepared video of "
            f"{d.name} has {stored['min_frames']} frames: lower data.num_frames, or re-prepare "
            f"with --min_frames={d.num_frames} so shorter videos are left out")
    if d.name != "single_video" and d.crop_fraction == 1 and d.resolution and (
            stored["size"] % d.resolution):
        raise ConfigError(
            f"data.resolution={d.resolution} does not divide the prepared frame size "
            f"{stored['size']} of {d.name}: set data.resolution to {stored['size']} (or a "
            f"divisor), or prepare the dataset at --resolution={d.resolution}")
    if d.name == "moving_digits" and stored["channels"] != d.channels:
        raise ConfigError(f"data.channels={d.channels} but {d.name} has {stored['channels']} "
                          f"channel(s): set data.channels={stored['channels']}")


def make_iterator(data_config: Any, *, split: str, seed: int, global_batch_size: int,
                  process_index: int = 0, process_count: int = 1, shuffle: bool = True):
    """Infinite, deterministic, checkpointable iterator of host-local numpy batches.

    One global stream: element i is example perm_epoch(i) of the split, preprocessed with
    randomness seeded by (seed, i); global batch g is elements [gG, (g+1)G). Process p
    of n reads rows [pL, (p+1)L) of every global batch (L = G/n), so shards are disjoint,
    an epoch covers the split, and the global batches — hence losses and parameters —
    do not depend on how many processes read them. (With joint images taken from the
    batch, the donor rows are the host's own rows, which does depend on n.)
    With data.worker_count > 0, transforms run in that many worker processes
    (grain's multiprocess prefetch); the iterator state is still JSON.
    """
    if global_batch_size % process_count:
        raise ConfigError(f"global batch size {global_batch_size} is not divisible by "
                          f"{process_count} processes")
    local_batch = global_batch_size // process_count
    if data_config.name == "single_video":
        source, builder = _single_video_source(data_config), None
    else:
        builder = get_builder(data_config)
        source = _split_source(builder, data_config, split)
    stored = _stored_layout(source, builder)
    check_compatible(data_config, stored)
    examples = grain.MapDataset.source(source)
    if len(examples) == 0:
        raise DatasetNotFoundError(f"split {split!r} of {data_config.name} has no examples")
    if (data_config.num_images_per_video and data_config.joint_images_from == "batch"
            and local_batch < 2):
        raise ConfigError("data.joint_images_from='batch' needs at least 2 videos per host "
                          f"batch (this host has {local_batch}); use 'dataset'")
    preprocess = _Preprocess(data_config, examples, stored)
    ds = examples.shuffle(seed=seed) if shuffle else examples
    ds = ds.repeat(None).random_map(preprocess, seed=seed + 1)
    # Local batch k of the stream holds elements [kL, (k+1)L); this process's rows of
    # global batch g are local batch g·n + p.
    ds = ds.batch(local_batch, drop_remainder=True)[process_index::process_count]
    if data_config.num_images_per_video and preprocess.from_batch:
        ds = ds.map(_DonorImages())
    options = grain.ReadOptions(num_threads=max(int(data_config.read_threads), 1),
                                prefetch_buffer_size=2)
    ids = ds.to_iter_dataset(options)
    if data_config.worker_count > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (notebooks, tests)
            flags.FLAGS.mark_as_parsed()
        ids = ids.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=int(data_config.worker_count), per_worker_buffer_size=2))
    return iter(ids)


def take_clips(data_config: Any, num: int, *, split: str, seed: int = 0,
               with_labels: bool = False, **overrides: Any) -> Any:
    """Up to `num` uint8 clips [n, T, R, R, C] of `split` (shuffled by `seed`; no joint
    images, no worker processes), for evaluators and previews; `overrides` set data keys
    such as random_flip=False. `with_labels`: (clips, int32 labels [n]) instead."""
    d = data_config.copy_and_resolve_references()
    d.num_images_per_video, d.worker_count = 0, 0
    for key, value in overrides.items():
        d[key] = value
    n = min(int(num), len(get_data_source(d, split=split)))
    it = make_iterator(d, split=split, seed=seed, global_batch_size=1, shuffle=True)
    try:
        batches = [next(it) for _ in range(n)]
        clips = np.concatenate([b["video"] for b in batches])
        if with_labels:
            return clips, np.concatenate([b["label"] for b in batches]).astype(np.int32)
        return clips
    finally:
        getattr(it, "close", lambda: None)()  # stops grain's worker processes
