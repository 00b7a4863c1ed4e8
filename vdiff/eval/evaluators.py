"""Evaluators chosen in the config: `config.evals.<name> = dict(settings)`.

Each evaluator is built once per run (compiling its sampler, loading weights, caching
statistics of real data) and then called with the EMA params:

    evaluators = build_evaluators(config, method, mesh)     # [(name, evaluator)]
    results = run_evaluators(evaluators, params, rng)      # {'fvd': 123.4, ...}

The trainer calls them every `train.eval_every` steps and at the last step;
`--mode=eval` calls them on a finished run (vdiff/eval/run_eval.py). A method names the
evaluators that apply to it in its `evaluators` attribute (vdiff/methods/base.py). Registry:

    fvd                   FVD (Kinetics-400 I3D logits) of N sampled clips vs N clips of
                          the held-out split; clips shorter than 16 frames are stretched to
                          16 by repeating frames (both sets alike), grey is copied to RGB
    sinfusion_next_frame  SinFusion Predictor: PSNR of predicted frame j from real frame
                          j − k on the frames held out from training, vs copying frame j − k
    pvdm_reconstruction   PVDM autoencoder: PSNR, SSIM and LPIPS of reconstructions of N
                          held-out clips (per-frame metrics averaged over frames and clips)
    heldout_loss          the training loss on fixed batches of the training split and of the
                          held-out split, with the same noise for both: their gap shows a
                          model fitting its training videos rather than the data
    digit_score           moving digits only: how recognisable the digits in N sampled clips
                          are to a digit classifier (vdiff/eval/digit_score.py), next to the
                          same numbers for real frames; FVD cannot see this at 32×32
    nearest_train         memorisation: each of N sampled clips' distance to its nearest
                          training clip, against the same for fresh clips the model never saw
                          (vdiff/eval/nearest_neighbours.py)

The sampling evaluators (fvd, digit_score, nearest_train) sample in batches of their own
`batch_size` setting (0: `sample.num_samples`), rounded up to the data-parallel size.
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
from vdiff.core.pixels import to_unit_range

I3D_FRAMES = 16  # the standard FVD clip length


def settings_for(name: str, defaults: dict[str, Any], given: Any) -> dict[str, Any]:
    """An evaluator's defaults overridden by `config.evals.<name>` (unknown keys: ConfigError)."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"config.evals.{name}: unknown setting(s) {unknown}; known: "
                          f"{sorted(defaults)}")
    return {**defaults, **given}


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


class _SampledClips:
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
        self.sample = _SampledClips("fvd", config, method, mesh, settings)
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
        self.sample = _SampledClips("digit_score", config, method, mesh, settings)
        resolution = int(config.data.resolution)
        self.clf = digit_score.classifier(resolution)
        self.real = digit_score.reference(self.clf, resolution=resolution)
        self.by_class = (config.data.get("label_from", "label") == "digit_set"
                         and self.sample.labels(1) is not None)
        if self.by_class:
            self.real_accuracy = digit_score.reference_accuracy(self.clf, resolution=resolution)

    def __call__(self, params: Any, rng: jax.Array) -> dict[str, float]:
        from vdiff.data import moving_digits
        from vdiff.eval import digit_score

        n = int(self.s["num_videos"])
        videos = self.sample(params, rng, n)
        got = digit_score.score(videos, self.clf)
        out = {"digit_confidence": got["confidence"], "digit_score": got["score"],
               "digit_confidence_real": self.real["confidence"],
               "digit_score_real": self.real["score"]}
        if self.by_class:
            asked = [moving_digits.digits_of_class(int(c)) for c in self.sample.labels(n)[:n]]
            alone = [i for i, d in enumerate(asked) if len(d) == 1]
            if alone:
                out["digit_accuracy"] = digit_score.accuracy(
                    videos[alone], np.asarray([asked[i][0] for i in alone]), self.clf)
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
        self.sample = _SampledClips("nearest_train", config, method, mesh, settings)
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


def best_shrinkage(prev: np.ndarray, target: np.ndarray, change: np.ndarray,
                   num: int = 1001) -> float:
    """The α on a grid of `num` points in [0, 1] that maximises the mean over pairs of
    PSNR(prev + α·change, target), with each pair's squared error in closed form:
    ‖d − α r‖² = ‖d‖² − 2α⟨d, r⟩ + α²‖r‖² (d = target − prev). The mean of per-pair PSNRs
    is the reported score; fitting the pooled squared error instead can pick an α whose
    mean PSNR is below the copy's (seen on carphone at 36×44: α = 1 at k = 2, 0.03 dB
    below copy on the validation pairs)."""
    n = len(prev)
    d = (target - prev).reshape(n, -1).astype(np.float64)
    r = change.reshape(n, -1).astype(np.float64)
    dd, dr, rr = (d * d).sum(1), (d * r).sum(1), (r * r).sum(1)
    alphas = np.linspace(0.0, 1.0, num)
    sse = dd[None] - 2 * alphas[:, None] * dr[None] + alphas[:, None] ** 2 * rr[None]
    mse = np.maximum(sse, 1e-20) / d.shape[1]  # a perfect α would be +inf dB
    return float(alphas[np.argmax(np.mean(-np.log10(mse), axis=1))])


class SinFusionNextFrameEvaluator:
    """Next-frame PSNR of the SinFusion Predictor on held-out frames, against copy-last-frame.

    The Predictor trains on the first `data.num_frames` frames of its video; frames after
    them are held out. For each k in `strides` (|k| ≤ sinfusion.max_k) and up to `max_pairs`
    held-out targets j, frame j is sampled from real frame j − k (full frame, one DDIM run)
    and compared with frame j; the baseline predicts frame j − k itself. With no frame held
    out (data.max_frames = 0 trains on all of them) the training frames are used and the
    result is in-sample (reported as `..._in_sample` = 1). Sampling uses DDIM with `eta`
    (default 0, the deterministic sampler: a sharper estimate than one ancestral draw).

    PSNR is a squared-error score, and for squared error the best point estimate is the
    posterior mean E[x_j | x_{j−k}], not a sample (a sample pays the predictive variance
    on top: ≈ 3 dB when the two are equal). With `num_samples` = N > 1 the evaluator also
    reports `next_frame_psnr_mean{N}_k*`, the PSNR of the average of N independent samples,
    a Monte-Carlo estimate of the posterior mean; the single-sample score stays reported.
    With `posterior_mean` (default) and an x0- or v-parameterized Predictor it also reports
    `next_frame_psnr_posterior_mean_k*`: the model's own posterior mean in one network call
    (`sinfusion_apps.posterior_mean_frames`). `num_samples` = 0 skips sampling (posterior
    mean only: one network call per frame, cheap enough for `train.eval_every`).

    `validation_frames` = V > 0 splits the held-out frames: targets among the first V after
    the training frames are the validation set, reported with a `val_` prefix, and the rest
    the test set (the unprefixed keys). Choosing a checkpoint by its validation score
    (early stopping) then leaves the test score unbiased.

    With validation frames and a posterior mean, the evaluator also fits one number per k
    on the validation pairs: the shrinkage α ∈ [0, 1] of the predicted change
    r = mean − prev that maximises the reported score, the mean PSNR of prev + α r over the
    pairs (`best_shrinkage`), and reports the test PSNR of prev + α* r as
    `next_frame_psnr_shrunk_k*`, with `shrinkage_alpha_k*`. α* < 1 says the Predictor
    predicts more change than the held-out frames have; α = 0 (the copy) is a candidate, so
    the shrunk Predictor never scores below copy on the validation pairs; the test frames
    play no part in choosing it.
    """

    DEFAULTS = dict(strides=(1, 2, 3), max_pairs=16, eta=0.0, seed=0, num_samples=1,
                    posterior_mean=True, validation_frames=0)

    def __init__(self, config: Any, method: Any, mesh: Any, settings: dict[str, Any]):
        from vdiff.data.single_video import load_frames

        del mesh
        self.method, self.s = method, settings
        d = config.data
        frames = load_frames(d.source_dir, resolution=d.resolution, channels=d.channels)
        self.frames = to_unit_range(frames)
        self.num_train = int(d.num_frames) if d.max_frames else len(frames)
        self.num_val = int(settings["validation_frames"])
        self._jit_cache: dict[tuple[str, int], Any] = {}
        if self.num_val and self.num_train + self.num_val >= len(frames):
            raise ConfigError(
                f"config.evals.sinfusion_next_frame.validation_frames={self.num_val} leaves no "
                f"test frames: the video has {len(frames)} frames and {self.num_train} train")
        bad = [k for k in settings["strides"] if not 1 <= k <= method.max_k]
        if bad:
            raise ConfigError(f"config.evals.sinfusion_next_frame.strides {bad} outside "
                              f"[1, sinfusion.max_k={method.max_k}]")

    def pairs(self, k: int, split: str = "test") -> tuple[np.ndarray, bool]:
        """Target frame indices j of `split` ('test' | 'val'; evenly spread, ≤ max_pairs)
        and whether they are in-sample."""
        first = self.method.context * k  # every context frame exists
        held_out = np.arange(max(self.num_train, first), len(self.frames))
        in_sample = len(held_out) == 0
        targets = np.arange(first, len(self.frames)) if in_sample else held_out
        if not in_sample:
            first_test = self.num_train + self.num_val
            targets = targets[targets < first_test] if split == "val" else (
                targets[targets >= first_test])
        if len(targets) > self.s["max_pairs"]:
            targets = targets[np.linspace(0, len(targets) - 1, self.s["max_pairs"]).astype(int)]
        return targets, in_sample

    def __call__(self, params: Any, rng: jax.Array) -> dict[str, float]:
        out: dict[str, float] = {}
        means: dict[tuple[str, int], Any] = {}  # posterior means per (split, k)
        for split in ("val", "test") if self.num_val else ("test",):
            prefix = "val_" if split == "val" else ""
            for k in self.s["strides"]:
                targets, in_sample = self.pairs(int(k), split)
                scores, means[split, int(k)] = self._score(params, rng, int(k), targets)
                out.update({prefix + key: v for key, v in scores.items()})
                out["next_frame_in_sample"] = float(in_sample)
        for k in self.s["strides"]:
            if means.get(("val", int(k))) is not None and means.get(("test", int(k))) is not None:
                out.update(self._shrunk(int(k), means["val", int(k)], means["test", int(k)]))
        return out

    def _shrunk(self, k: int, val_mean: Any, test_mean: Any) -> dict[str, float]:
        """α* fitted on the validation pairs, applied to the test pairs (class docstring)."""
        from vdiff.eval import image_metrics

        def change(split: str, mean: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            targets, _ = self.pairs(k, split)
            prev = self.frames[targets - k]
            return prev, self.frames[targets], np.asarray(mean, np.float32) - prev

        prev, real, r = change("val", val_mean)
        alpha = best_shrinkage(prev, real, r)
        prev, real, r = change("test", test_mean)
        shrunk = image_metrics.psnr(jnp.asarray(prev + alpha * r), jnp.asarray(real),
                                    data_range=2.0)
        return {f"shrinkage_alpha_k{k}": alpha,
                f"next_frame_psnr_shrunk_k{k}": float(jnp.mean(shrunk))}

    def _jitted(self, kind: str, k: int, fn: Any) -> Any:
        """One jitted function per (kind, k), kept across calls: the trainer evaluates every
        `eval_every` steps, and a fresh jax.jit each time would recompile each time."""
        key = (kind, k)
        if key not in self._jit_cache:
            self._jit_cache[key] = jax.jit(fn)
        return self._jit_cache[key]

    def _score(self, params: Any, rng: jax.Array, k: int, targets: np.ndarray
               ) -> tuple[dict[str, float], Any]:
        """The split's scores at stride k, and its posterior-mean frames (None without)."""
        from vdiff.eval import image_metrics
        from vdiff.eval.nnf import next_frame_psnr
        from vdiff.methods import sinfusion_apps as apps

        prev = jnp.asarray(self.frames[targets - k])
        real = self.frames[targets]
        copy = image_metrics.psnr(prev, real, data_range=2.0)  # the baseline predicts prev
        # the Predictor's clean frames: n = target − k, then n − k, … (context_frames > 1)
        cond = jnp.concatenate([jnp.asarray(self.frames[targets - (j + 1) * k])
                                for j in range(self.method.context)], axis=-1)
        out = {f"copy_last_frame_psnr_k{k}": float(jnp.mean(copy)),
               f"next_frame_pairs_k{k}": float(len(targets))}
        rng_k = jax.random.fold_in(rng, k)
        n = int(self.s["num_samples"])
        if n:
            sample = self._jitted("sample", k, lambda p, r, c: apps.sample_frames(
                self.method, p, r, (*c.shape[:-1], self.method.channels), cond=c,
                frame_diff=k, eta=self.s["eta"]))
            preds = [sample(params, jax.random.fold_in(rng_k, i), cond) for i in range(n)]
            out[f"next_frame_psnr_k{k}"] = next_frame_psnr(preds[0], real, prev,
                                                           data_range=2.0)["psnr"]
            if n > 1:
                mean = jnp.mean(jnp.stack(preds), axis=0)
                out[f"next_frame_psnr_mean{n}_k{k}"] = next_frame_psnr(
                    mean, real, prev, data_range=2.0)["psnr"]
        mean = None
        if self.s["posterior_mean"] and self.method.parameterization in ("x0", "v"):
            mean = self._jitted("posterior_mean", k, lambda p, r, c: apps.posterior_mean_frames(
                self.method, p, r, (*c.shape[:-1], self.method.channels), cond=c,
                frame_diff=k))(params, rng_k, cond)
            out[f"next_frame_psnr_posterior_mean_k{k}"] = next_frame_psnr(
                mean, real, prev, data_range=2.0)["psnr"]
        return out, mean


class HeldOutLossEvaluator:
    """The method's own loss (train=False) on `num_batches` fixed batches of `batch_size`
    examples from each of `splits` (default training split, then held-out split).

    Each split's i-th batch uses the same noise and noise levels (key i of `seed`), and the
    batches never change during a run, so the values are comparable across evaluations and
    the difference between the splits (`heldout_loss_gap` = second − first) is a paired
    estimate: it grows when the model fits its training examples rather than their
    distribution. Reported as `heldout_loss_<split>` for each split and the gap."""

    DEFAULTS = dict(num_batches=4, batch_size=32, splits=("train", "test"), seed=0)

    def __init__(self, config: Any, method: Any, mesh: Any, settings: dict[str, Any]):
        from vdiff.data import pipeline

        del mesh
        if jax.process_count() > 1:
            raise ConfigError("the heldout_loss evaluator runs in one process only for now: "
                              "drop config.evals.heldout_loss for multi-host training")
        self.s = settings
        splits = tuple(settings["splits"])
        if len(splits) != 2:
            raise ConfigError(f"config.evals.heldout_loss.splits must name two splits, got "
                              f"{splits}")
        self.splits = splits
        d = config.data.copy_and_resolve_references()
        d.worker_count = 0
        self.batches = {}
        for split in splits:
            it = pipeline.make_iterator(d, split=split, seed=int(settings["seed"]),
                                        global_batch_size=int(settings["batch_size"]))
            try:
                self.batches[split] = [next(it) for _ in range(int(settings["num_batches"]))]
            finally:
                getattr(it, "close", lambda: None)()
        self.loss_fn = jax.jit(lambda p, b, r: method.loss(p, b, r, train=False)[0])

    def __call__(self, params: Any, rng: jax.Array) -> dict[str, float]:
        del rng  # fixed noise: comparable across evaluations and paired across splits
        keys = jax.random.split(jax.random.key(int(self.s["seed"])), int(self.s["num_batches"]))
        out = {}
        for split in self.splits:
            losses = [float(self.loss_fn(params, b, k)) for b, k in zip(self.batches[split], keys)]
            out[f"heldout_loss_{split}"] = float(np.mean(losses))
        first, second = self.splits
        out["heldout_loss_gap"] = out[f"heldout_loss_{second}"] - out[f"heldout_loss_{first}"]
        return out


class PVDMReconstructionEvaluator:
    """Autoencoder reconstruction quality on `num_videos` clips of the held-out split:
    PSNR and SSIM (data range 2 for [−1, 1] frames) and LPIPS (grey copied to RGB),
    each the mean over frames, then over clips."""

    DEFAULTS = dict(num_videos=64, split="test", batch_size=8, lpips_net="alexnet", seed=0)

    def __init__(self, config: Any, method: Any, mesh: Any, settings: dict[str, Any]):
        from vdiff.methods.pvdm import held_out_clips

        del mesh
        self.method, self.s = method, settings
        self.clips = held_out_clips(config, int(settings["num_videos"]),
                                    split=settings["split"], seed=int(settings["seed"]))
        self.reconstruct = jax.jit(lambda p, x: method.decode(p, method.encode(p, x)))

    def __call__(self, params: Any, rng: jax.Array) -> dict[str, float]:
        from vdiff.eval import image_metrics, lpips
        from vdiff.methods.pvdm import to_rgb

        del rng
        bs, psnr, ssim, lp = int(self.s["batch_size"]), [], [], []
        for start in range(0, len(self.clips), bs):
            x = to_unit_range(jnp.asarray(self.clips[start:start + bs]))
            y = jnp.clip(self.reconstruct(params, x), -1.0, 1.0)
            psnr.append(np.asarray(image_metrics.video_psnr(y, x, data_range=2.0)))
            ssim.append(np.asarray(image_metrics.video_ssim(y, x, data_range=2.0)))
            frames = lambda v: np.asarray(to_rgb(v)).reshape(-1, *v.shape[2:4], 3)  # noqa: E731
            per_frame = lpips.lpips(frames(y), frames(x), net=self.s["lpips_net"])
            lp.append(per_frame.reshape(len(x), -1).mean(axis=1))
        return {"recon_psnr": float(np.mean(np.concatenate(psnr))),
                "recon_ssim": float(np.mean(np.concatenate(ssim))),
                "recon_lpips": float(np.mean(np.concatenate(lp))),
                "recon_num_videos": float(len(self.clips))}


EVALUATORS: dict[str, Any] = {
    "fvd": FVDEvaluator,
    "sinfusion_next_frame": SinFusionNextFrameEvaluator,
    "pvdm_reconstruction": PVDMReconstructionEvaluator,
    "digit_score": DigitScoreEvaluator,
    "heldout_loss": HeldOutLossEvaluator,
    "nearest_train": NearestTrainEvaluator,
}


def check_names(config: Any) -> None:
    """Every `config.evals` entry names a known evaluator (cheap: nothing is built)."""
    for name in config.evals.keys():
        if name not in EVALUATORS:
            raise ConfigError(f"unknown evaluator config.evals.{name}; known: "
                              f"{sorted(EVALUATORS)}")


def build_evaluators(config: Any, method: Any, mesh: Any) -> list[tuple[str, Any]]:
    """Instantiates the `config.evals` entries that apply to this method (named in its
    `evaluators`; others are logged and skipped). Every entry's settings are checked."""
    check_names(config)
    out = []
    for name, given in config.evals.items():
        settings = settings_for(name, EVALUATORS[name].DEFAULTS, given)
        if name not in method.evaluators:
            logging.info("evaluator %s does not apply to this run; skipped", name)
            continue
        out.append((name, EVALUATORS[name](config, method, mesh, settings)))
    return out


def run_evaluators(evaluators: list[tuple[str, Any]], params: Any,
                   rng: jax.Array) -> dict[str, float]:
    results: dict[str, float] = {}
    for i, (name, evaluator) in enumerate(evaluators):
        logging.info("evaluator %s: running", name)
        t0 = time.perf_counter()
        new = evaluator(params, jax.random.fold_in(rng, i))
        results.update(new)
        # each evaluator's numbers as soon as they exist: a run cut short keeps them in its log
        logging.info("evaluator %s took %.1f s: %s", name, time.perf_counter() - t0,
                     ", ".join(f"{k} {_short(v)}" for k, v in sorted(new.items())))
    return results


def _short(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)
