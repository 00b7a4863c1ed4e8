"""Shared machinery of the TF-free video dataset builders (UCF-101, any folder of videos).

Preparation runs in two passes:

1. decode: every source file is decoded by ffmpeg (resized and center-cropped to
   R×R) and its frames encoded as JPEG/PNG into a per-file cache under the tfds
   download dir, on a thread pool (ffmpeg runs outside the GIL). A file that fails
   — zero bytes, not a video, truncated, shorter than `min_frames` — is recorded
   with its reason and skipped. Interrupting and rerunning reuses the cache, so
   preparation is restartable file by file.
2. write: tfds writes the cached examples to ArrayRecord; the report (files used,
   files skipped with reasons, class names, frame-count range) goes into the
   dataset's `metadata.json`, where the pipeline checks it against the config.

Examples: `frames` (list of encoded frames), `label` int32, `num_frames` int32,
`filename` (the file's path relative to the source root).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shutil
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from vdiff import progress as progress_lib
from vdiff.data import frame_codec, video_io
from vdiff.data.builders import tfds_build
from vdiff.errors import InputError


@dataclasses.dataclass
class VideoBuilderConfig(tfds.core.BuilderConfig):
    resolution: int = 64


@dataclasses.dataclass
class PrepareOptions:
    """How files are decoded and stored (recorded in the dataset's metadata)."""

    min_frames: int = 16  # shorter videos are skipped (the report says so)
    max_frames: int = 0  # 0 = keep every frame
    frame_format: str = "jpeg"  # 'jpeg' or 'png' (lossless)
    jpeg_quality: int = 95
    strict: bool = True  # skip files with any decoder error instead of keeping what decoded


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One video (a file, or a folder of frame images) assigned to a split."""

    path: str
    key: str  # path relative to the source root: stable id, also the cache name
    label: int
    split: str


@dataclasses.dataclass
class PrepareReport:
    used: dict[str, list[str]]  # split → keys
    skipped: dict[str, str]  # key → reason
    num_frames: dict[str, int]  # key → frames kept

    def summary(self) -> dict[str, Any]:
        counts = list(self.num_frames.values())
        return {
            "files_used": {s: len(k) for s, k in self.used.items()},
            "files_skipped": len(self.skipped),
            "skipped": dict(sorted(self.skipped.items())),
            "num_frames_min": int(min(counts)) if counts else 0,
            "num_frames_max": int(max(counts)) if counts else 0,
        }


def _cache_name(key: str) -> str:
    return key.replace(os.sep, "__").replace("/", "__")


def _decode_one(src: SourceFile, resolution: int, options: PrepareOptions, cache_dir: str):
    """Decodes one file into the cache (or reuses it); returns (num_frames, None) or (0, reason)."""
    base = os.path.join(cache_dir, _cache_name(src.key))
    if os.path.exists(base + ".npz"):
        with np.load(base + ".npz") as cached:
            return int(cached["offsets"].shape[0] - 1), None
    if os.path.exists(base + ".skip.json"):
        with open(base + ".skip.json") as f:
            return 0, json.load(f)["reason"]
    try:
        if not os.path.exists(src.path):
            raise video_io.DecodeError("file not found")
        if os.path.isdir(src.path):
            frames = video_io.read_frame_folder(src.path, resolution=resolution)
            frames = frames[:options.max_frames] if options.max_frames else frames
        else:
            frames = video_io.decode_video(src.path, resolution=resolution,
                                           max_frames=options.max_frames, strict=options.strict)
        if len(frames) < options.min_frames:
            raise video_io.DecodeError(f"too short: {len(frames)} frames < min_frames="
                                       f"{options.min_frames}")
    except video_io.DecodeError as e:
        _atomic_write(base + ".skip.json", json.dumps({"reason": str(e)}).encode())
        return 0, str(e)
    encoded = frame_codec.encode_frames(frames, fmt=options.frame_format,
                                        quality=options.jpeg_quality)
    offsets = np.cumsum([0] + [len(b) for b in encoded]).astype(np.int64)
    blob = np.frombuffer(b"".join(encoded), np.uint8)
    tmp = base + ".tmp.npz"
    np.savez(tmp, offsets=offsets, blob=blob)
    os.replace(tmp, base + ".npz")
    return len(encoded), None


def _atomic_write(path: str, data: bytes) -> None:
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def _load_cached(cache_dir: str, key: str) -> list[bytes]:
    with np.load(os.path.join(cache_dir, _cache_name(key) + ".npz")) as cached:
        offsets, blob = cached["offsets"], cached["blob"].tobytes()
    return [blob[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def decode_all(files: list[SourceFile], resolution: int, options: PrepareOptions,
               cache_dir: str, *, workers: int, progress: bool = True) -> PrepareReport:
    """Pass 1: decode every file into the cache on `workers` threads (see module doc)."""
    os.makedirs(cache_dir, exist_ok=True)
    used: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    num_frames: dict[str, int] = {}
    bar = progress_lib.Progress("decoding videos", len(files), unit="files") if progress else None
    with concurrent.futures.ThreadPoolExecutor(max(workers, 1)) as pool:
        futures = {pool.submit(_decode_one, f, resolution, options, cache_dir): f
                   for f in files}
        for future in concurrent.futures.as_completed(futures):
            src = futures[future]
            count, reason = future.result()
            if reason is None:
                used.setdefault(src.split, []).append(src.key)
                num_frames[src.key] = count
            else:
                skipped[src.key] = reason
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    for keys in used.values():
        keys.sort()
    return PrepareReport(used, skipped, num_frames)


class VideoDatasetBuilder(tfds.core.GeneratorBasedBuilder):
    """Base of the video builders: subclasses list the source files and class names."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    SPLITS: tuple[str, ...] = ("train", "test")
    num_workers: int = os.cpu_count() or 1
    show_progress: bool = True
    prepare_options = PrepareOptions()

    # -- subclass interface ---------------------------------------------------
    def list_source_files(self, manual_dir: str) -> tuple[list[SourceFile], list[str]]:
        """(files, class names) under the manual dir; raises FileNotFoundError on a bad layout."""
        raise NotImplementedError

    # -- tfds -----------------------------------------------------------------
    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict({
                "frames": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),
                "label": tfds.features.Tensor(shape=(), dtype=np.int32),
                "num_frames": tfds.features.Tensor(shape=(), dtype=np.int32),
                "filename": tfds.features.Text(),
            }),
            metadata=tfds.core.MetadataDict(),
        )

    def decode_cache_dir(self, dl_manager) -> str:
        """Per-file cache, keyed by everything that changes the decoded frames."""
        o = self.prepare_options
        variant = (f"{self.builder_config.name}-{o.frame_format}{o.jpeg_quality}-max{o.max_frames}"
                   f"-{'strict' if o.strict else 'lenient'}")
        return os.path.join(dl_manager.download_dir, "vdiff_decoded", self.name, variant)

    def _split_generators(self, dl_manager):
        files, classes = self.list_source_files(os.fspath(dl_manager.manual_dir))
        cache_dir = self.decode_cache = self.decode_cache_dir(dl_manager)
        report = decode_all(files, self.builder_config.resolution, self.prepare_options,
                            cache_dir, workers=self.num_workers, progress=self.show_progress)
        if not report.num_frames:
            raise InputError(f"none of the {len(files)} source files could be used; "
                             f"first reasons: {list(report.skipped.items())[:3]}")
        meta = report.summary()
        meta.update(classes=classes, resolution=self.builder_config.resolution,
                    source_files=len(files), **dataclasses.asdict(self.prepare_options))
        self.info.metadata.update(meta)
        self.last_report = meta
        labels = {f.key: f.label for f in files}
        return {split: self._generate_examples(report.used.get(split, []), labels, cache_dir)
                for split in self.SPLITS}

    def _generate_examples(self, keys, labels, cache_dir):
        for key in progress_lib.track(keys, f"{self.name}: writing videos", unit="videos"):
            frames = _load_cached(cache_dir, key)
            yield key, {"frames": frames, "label": np.int32(labels[key]),
                        "num_frames": np.int32(len(frames)), "filename": key}


def prepare(builder: VideoDatasetBuilder, manual_dir: str, *, workers: int | None = None,
            options: PrepareOptions | None = None, keep_cache: bool = False) -> dict[str, Any]:
    """Builds the dataset (restartable) and returns its report; removes the decode cache."""
    if not os.path.isdir(manual_dir):
        raise FileNotFoundError(f"source directory {manual_dir} does not exist")
    if workers:
        builder.num_workers = workers
    if options is not None:
        builder.prepare_options = options
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    tfds_build.download_and_prepare(builder, source=manual_dir, download_config=config)
    report = getattr(builder, "last_report", None) or dict(builder.info.metadata)
    if not keep_cache and getattr(builder, "decode_cache", None):
        shutil.rmtree(builder.decode_cache, ignore_errors=True)
    return report
