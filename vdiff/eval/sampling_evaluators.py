"""Evaluators that sample clips from the method and score them: FVD against held-out clips
(`fvd`), digit recognisability on moving digits (`digit_score`) and the distance to the
nearest training clip (`nearest_train`, the memorisation check).

They share `SampledClips`, which samples in batches of the evaluator's own `batch_size`
setting (0: `sample.num_samples`), rounded up to the data-parallel size.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vdiff import progress
from vdiff.errors import ConfigError

I3D_FRAMES = 16  # the standard FVD clip length


def to_i3d_clips(videos: np.ndarray) -> np.ndarray:
    """uint8 [N, T, H, W, C] → uint8 [N, ≥16, H, W, 3]: grey → RGB; T < 16 stretched by
    repeating each frame (nearest-neighbour in time), identically for real and generated."""
    videos = np.asarray(videos)
    if videos.shape[-1] == 1:
        videos = np.repeat(videos, 3, axis=-1)
    t = videos.shape[1]
    if t < I3D_FRAMES:
        idx = np.floor(np.arange(I3D_FRAMES) * t / I3D_FRAMES).astype(int)
        videos = videos[:, idx]
    return videos


class SampledClips:
    """Samples `num_videos` clips from the method with the evaluator's sampler settings,
    in batches of the evaluator's `batch_size` (0: `sample.num_samples`) rounded up to the
    mesh's data-parallel size."""

    def __init__(self, name: str, config: Any, method: Any, mesh: Any,
                 settings: dict[str, Any]):
        from vdiff.train import sharding

        if jax.process_count() > 1:
            raise ConfigError(f"the {name} evaluator runs in one process only for now: drop "
                              f"config.evals.{name} for multi-host training and run "
                              "--mode=eval on one host")
        batch = int(settings.get("batch_size", 0)) or int(config.sample.num_samples)
        self.batch = sharding.round_up_to_data_parallel(max(batch, 1), mesh)
        s, self.method, self.name = settings, method, name
        kwargs = dict(num_samples=self.batch, num_steps=int(s["num_steps"]),
                      guidance_scale=float(s["guidance_scale"]), gamma=float(s["gamma"]))
        if s.get("sampler"):  # '' keeps the method's own sampler
            kwargs["sampler"] = s["sampler"]
        self.sample_fn = jax.jit(lambda p, r, labels: method.sample(p, r, **kwargs)
                                 if labels is None else method.sample(p, r, labels=labels,
                                                                      **kwargs))

    def labels(self, n: int) -> np.ndarray | None:
        """The classes of every clip `__call__` draws for `n` (whole batches, so possibly
        more than n): the method's `sample_labels`, cycling over all clips; None when the
        method has none."""
        got = self.method.sample_labels(math.ceil(n / self.batch) * self.batch)
        return None if got is None else np.asarray(got)

    def __call__(self, params: Any, rng: jax.Array, n: int) -> np.ndarray:
        """uint8 [n, T, H, W, C]."""
        from vdiff.data.video_io import to_uint8

        generated = []
        labels = self.labels(n)
        batches = math.ceil(n / self.batch)
        for i in progress.track(range(batches), f"{self.name}: sampling {n} videos",
                                unit="batches"):
            batch_labels = (None if labels is None
                            else jnp.asarray(labels[i * self.batch:(i + 1) * self.batch]))
            videos = self.sample_fn(params, jax.random.fold_in(rng, i), batch_labels)
            generated.append(to_uint8(np.asarray(jax.device_get(videos))))
        return np.concatenate(generated)[:n]


class FVDEvaluator:
    """FVD of `num_videos` samples of the method against as many held-out clips."""

    DEFAULTS = dict(num_videos=256, split="test", num_steps=50, gamma=0.3, guidance_scale=0.0,
                    i3d_batch_size=16, seed=0, batch_size=0, sampler="")

    def __init__(self, config: Any, method: Any, mesh: Any, settings: dict[str, Any]):
        from vdiff.eval import i3d

        self.config, self.s = config, settings
        self.sample = SampledClips("fvd", config, method, mesh, settings)
        i3d_mesh = mesh if jax.default_backend() != "cpu" else None
        self.extract = i3d.feature_extractor(batch_size=int(settings["i3d_batch_size"]),
                                             mesh=i3d_mesh)
        self.real_stats = None
        self.num_real = 0

    def _real_clips(self) -> np.ndarray:
        from vdiff.data import pipeline

        return pipeline.take_clips(self.config.data, int(self.s["num_videos"]),
                                   split=self.s["split"], seed=int(self.s["seed"]),
                                   random_flip=False)

    def __call__(self, params: Any, rng: jax.Array) -> dict[str, float]:
        from vdiff.eval.fvd import feature_stats, frechet_distance_from_stats

        t0 = time.perf_counter()
        if self.real_stats is None:
            real = self._real_clips()
            self.num_real = len(real)
            self.real_stats = feature_stats(self.extract(to_i3d_clips(real),
                                                         "fvd: I3D features of real clips"))
        n = min(int(self.s["num_videos"]), self.num_real)
        fake = self.sample(params, rng, n)
        mu, sigma = feature_stats(self.extract(to_i3d_clips(fake),
                                               "fvd: I3D features of samples"))
        value = frechet_distance_from_stats(*self.real_stats, mu, sigma)
        return {"fvd": float(value), "fvd_num_videos": float(n),
                "fvd_seconds": time.perf_counter() - t0}


class DigitScoreEvaluator:
    """Moving digits: the digit classifier's mean confidence and IS-style score on every
    frame of `num_videos` samples (`digit_confidence`, `digit_score`), next to the same
    numbers for real held-out frames (`digit_confidence_real`, `digit_score_real`). The
    gap between the two is how far samples are from recognisable digits.

    A class-conditional model on digit-set labels (data.label_from='digit_set') is also
    scored on the samples it was asked to draw as one digit d alone: `digit_accuracy`, the
    fraction of their frames the classifier reads as d (chance: 0.1), next to
    `digit_accuracy_real` for real one-digit frames."""

    DEFAULTS = dict(num_videos=64, num_steps=100, gamma=0.3, guidance_scale=0.0, batch_size=0,
                    sampler="")

    def __init__(self, config: Any, method: Any, mesh: Any, settings: dict[str, Any]):
        from vdiff.eval import digit_score

        if config.data.name != "moving_digits":
            raise ConfigError(f"config.evals.digit_score scores moving digits only, but "
                              f"data.name={config.data.name!r}: drop it from config.evals")
        if int(config.data.channels) != 1:
            raise ConfigError("config.evals.digit_score needs grey frames (data.channels=1)")
        self.s = settings
        self.sample = SampledClips("digit_score", config, method, mesh, settings)
        resolution = int(config.data.resolution)
        self.clf = digit_score.classifier(resolution)
        self.real = digit_score.reference(self.clf, resolution=resolution)
        self.by_class = (config.data.get("label_from", "label") == "digit_set"
                         and self.sample.labels(1) is not None)
        if self.by_class:
            self.real_accuracy = digit_score.reference_accuracy(self.clf, resolution=resolution)

    def __call__(self, params: Any, rng: jax.Array) -> dict[str, float]:
        from vdiff.eval import digit_score

        n = int(self.s["num_videos"])
        videos = self.sample(params, rng, n)
        got = digit_score.score(videos, self.clf)
        out = {"digit_confidence": got["confidence"], "digit_score": got["score"],
               "digit_confidence_real": self.real["confidence"],
               "digit_score_real": self.real["score"]}
        if self.by_class:
            accuracy = digit_score.one_digit_accuracy(videos, self.sample.labels(n)[:n],
                                                      self.clf)
            if accuracy is not None:
                out["digit_accuracy"] = accuracy
                out["digit_accuracy_real"] = self.real_accuracy
        return out


class NearestTrainEvaluator:
    """Memorisation check: the distance (RMSE, [0, 1] scale) from each of `num_videos`
    samples to its nearest clip among `num_train_videos` clips of the training split (0: all
    of it), against the same distance for `num_fresh` fresh clips the model never trained
    on. Reported: `nn_train_rmse` (mean over samples), `nn_train_rmse_fresh`,
    `nn_train_ratio` (their ratio: ≈ 1 for new samples, → 0 for copies) and
    `nn_train_close_fraction` (samples nearer than the 5 % quantile of fresh clips: ≈ 0.05
    for new samples).

    Fresh clips default to the held-out split. Moving digits keeps its test digit images
    apart from the training ones, so test clips are further from the training set than new
    clips of training digits would be; `fresh_builder_config='large', fresh_split=
    'train[2000:]'` gives a model trained on the default 2,000 videos fresh videos of its
    own distribution (the `large` training split extends the default one). Training clips
    come through the data pipeline without flips, one temporal crop per video, so for
    clips shorter than the stored videos the distance is to one crop of each video."""

    DEFAULTS = dict(num_videos=64, num_train_videos=0, num_fresh=256, fresh_split="test",
                    fresh_builder_config="", quantile=0.05, num_steps=100, gamma=0.3,
                    guidance_scale=0.0, batch_size=0, seed=0, sampler="")

    def __init__(self, config: Any, method: Any, mesh: Any, settings: dict[str, Any]):
        from vdiff.data import pipeline

        self.s = settings
        self.sample = SampledClips("nearest_train", config, method, mesh, settings)
        seed = int(settings["seed"])
        num_train = int(settings["num_train_videos"]) or sys.maxsize  # take_clips clamps
        self.train = pipeline.take_clips(config.data, num_train, split="train", seed=seed,
                                         random_flip=False)
        fresh = ({"builder_config": settings["fresh_builder_config"]}
                 if settings["fresh_builder_config"] else {})
        self.fresh = pipeline.take_clips(config.data, int(settings["num_fresh"]),
                                         split=settings["fresh_split"], seed=seed,
                                         random_flip=False, **fresh)
        self.fresh_rmse = None
        logging.info("nearest_train: %d training clips, %d fresh clips", len(self.train),
                     len(self.fresh))

    def __call__(self, params: Any, rng: jax.Array) -> dict[str, float]:
        from vdiff.eval import nearest_neighbours as nn

        if self.fresh_rmse is None:
            self.fresh_rmse, _ = nn.nearest(self.fresh, self.train)
        samples = self.sample(params, rng, int(self.s["num_videos"]))
        if samples.shape[1:] != self.train.shape[1:]:
            raise ConfigError(f"nearest_train compares samples {samples.shape[1:]} with "
                              f"training clips {self.train.shape[1:]}: their shapes must match "
                              "(data.num_frames, resolution and channels of the sampler)")
        rmse, _ = nn.nearest(samples, self.train)
        stats = nn.memorisation_stats(rmse, self.fresh_rmse, float(self.s["quantile"]))
        return {"nn_train_rmse": float(np.mean(rmse)),
                "nn_train_rmse_fresh": float(np.mean(self.fresh_rmse)),
                "nn_train_ratio": stats["ratio"],
                "nn_train_close_fraction": stats["close_fraction"],
                "nn_train_videos": float(len(self.train))}
