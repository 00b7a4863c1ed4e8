"""PVDM's latent cache (pvdm.cache_latents): the frozen encoder's latents of every training
example, encoded once on the host in batches, and the trainer's batches drawn from them (no
encoder in the train step: at the digits setting the frozen encoder is 70 % of its FLOPs)."""

from __future__ import annotations

import logging
from typing import Any

import jax
import numpy as np

from vdiff.core.pixels import to_unit_range
from vdiff.errors import ConfigError


def training_latents(stage: Any, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [N, clips, L, C], int32 labels [N]) of a `PVDMLatentStage`: its frozen
    encoder's latents of every example of the training split (clip 1 then clip 2 for a
    conditional model) and the examples' labels (data.label_from)."""
    from vdiff.data import pipeline

    d = stage.config.data
    source = pipeline.get_data_source(d, split="train")
    first = source[0]
    stored = len(first["video"]) if "video" in first else None
    if stored != int(d.num_frames) or d.random_flip:
        raise ConfigError(
            "pvdm.cache_latents needs every training example to be one fixed clip: a "
            f"dataset of stored clips of exactly data.num_frames={d.num_frames} frames "
            f"(this one: {stored if stored is not None else 'variable-length videos'}) "
            f"and data.random_flip=False (is {d.random_flip}); set "
            "pvdm.cache_latents=False to encode each batch instead")
    n = len(source)
    clips, labels = pipeline.take_clips(d, n, split="train", seed=0, random_flip=False,
                                        temporal_crop="first", with_labels=True)
    s = stage.clip_frames
    encode = jax.jit(lambda p, v: stage.encode(p, to_unit_range(v)))
    params = {"autoencoder": stage.ae_params}
    out = []
    for i in range(0, n, batch_size):
        chunk = clips[i:i + batch_size]
        per_clip = [encode(params, chunk[:, j * s:(j + 1) * s])
                    for j in range(stage.clips_per_example)]
        out.append(np.stack([np.asarray(z) for z in per_clip], axis=1))
    return np.concatenate(out), labels


def cached_batches(latents: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
    """Host batches {"latents", "label"} of examples drawn uniformly with replacement from
    the cached `latents` [N, clips, L, C] and their `labels` [N]."""
    from vdiff.data.sampled_batches import SampledBatches

    logging.info("pvdm: cached the latents of %d training examples (%.1f MB)",
                 len(latents), latents.nbytes / 2**20)

    def example(rng: np.random.Generator) -> dict[str, np.ndarray]:
        i = rng.integers(len(latents))
        return {"latents": latents[i], "label": labels[i]}

    return SampledBatches(example, batch_size, seed)
