"""Evaluators chosen in the config: `config.evals.<name> = dict(settings)`.

Each evaluator is built once per run (compiling its sampler, loading weights, caching
statistics of real data) and then called with the EMA params:

    evaluators = build_evaluators(config, method, mesh)     # [(name, evaluator)]
    results = run_evaluators(evaluators, params, rng)      # {'fvd': 123.4, ...}

The trainer calls them every `train.eval_every` steps and at the last step;
`--mode=eval` calls them on a finished run (vdiff/eval/run_eval.py). Registry:

    fvd                   FVD (Kinetics-400 I3D logits) of N sampled clips vs N clips of
                          the held-out split; clips shorter than 16 frames are stretched to
                          16 by repeating frames (both sets alike), grey is copied to RGB
    sinfusion_next_frame  SinFusion Predictor: PSNR of predicted frame j from real frame
                          j − k on the frames held out from training, vs copying frame j − k
    pvdm_reconstruction   PVDM autoencoder: PSNR, SSIM and LPIPS of reconstructions of N
                          held-out clips (per-frame metrics averaged over frames and clips)
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vdiff.errors import ConfigError

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


class FVDEvaluator:
    """FVD of `num_videos` samples of the method against as many held-out clips."""

    DEFAULTS = dict(num_videos=256, split="test", num_steps=50, gamma=0.3, guidance_scale=0.0,
                    i3d_batch_size=16, seed=0)

    def __init__(self, config: Any, method: Any, mesh: Any, settings: dict[str, Any]):
        from vdiff.eval import i3d
        from vdiff.train import sharding

        if jax.process_count() > 1:
            raise ConfigError("the fvd evaluator runs in one process only for now: drop "
                              "config.evals.fvd for multi-host training and run --mode=eval "
                              "on one host")
        self.config, self.method, self.mesh = config, method, mesh
        self.s = settings
        self.batch = sharding.round_up_to_data_parallel(
            max(int(config.sample.num_samples), 1), mesh)
        s = settings
        self.sample_fn = jax.jit(lambda p, r: method.sample(
            p, r, num_samples=self.batch, num_steps=int(s["num_steps"]),
            guidance_scale=float(s["guidance_scale"]), gamma=float(s["gamma"])))
        i3d_mesh = mesh if jax.default_backend() != "cpu" else None
        self.extract = i3d.feature_extractor(batch_size=int(s["i3d_batch_size"]), mesh=i3d_mesh)
        self.real_stats = None
        self.num_real = 0

    def _real_clips(self) -> np.ndarray:
        from vdiff.data import pipeline

        return pipeline.take_clips(self.config.data, int(self.s["num_videos"]),
                                   split=self.s["split"], seed=int(self.s["seed"]),
                                   random_flip=False)

    def __call__(self, params: Any, rng: jax.Array) -> dict[str, float]:
        from vdiff.data.video_io import to_uint8
        from vdiff.eval.fvd import feature_stats, frechet_distance_from_stats

        t0 = time.perf_counter()
        if self.real_stats is None:
            real = self._real_clips()
            self.num_real = len(real)
            self.real_stats = feature_stats(self.extract(to_i3d_clips(real)))
        n = min(int(self.s["num_videos"]), self.num_real)
        generated = []
        for i in range(math.ceil(n / self.batch)):
            videos = self.sample_fn(params, jax.random.fold_in(rng, i))
            generated.append(to_uint8(np.asarray(jax.device_get(videos))))
        fake = np.concatenate(generated)[:n]
        mu, sigma = feature_stats(self.extract(to_i3d_clips(fake)))
        value = frechet_distance_from_stats(*self.real_stats, mu, sigma)
        return {"fvd": float(value), "fvd_num_videos": float(n),
                "fvd_seconds": time.perf_counter() - t0}


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
    """

    DEFAULTS = dict(strides=(1, 2, 3), max_pairs=16, eta=0.0, seed=0, num_samples=1,
                    posterior_mean=True, validation_frames=0)

    def __init__(self, config: Any, method: Any, mesh: Any, settings: dict[str, Any]):
        from vdiff.data.single_video import load_frames

        del mesh
        self.method, self.s = method, settings
        d = config.data
        frames = load_frames(d.source_dir, resolution=d.resolution, channels=d.channels)
        self.frames = frames.astype(np.float32) / 127.5 - 1.0
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
        held_out = np.arange(max(self.num_train, k), len(self.frames))
        in_sample = len(held_out) == 0
        targets = np.arange(k, len(self.frames)) if in_sample else held_out
        if not in_sample:
            first_test = self.num_train + self.num_val
            targets = targets[targets < first_test] if split == "val" else (
                targets[targets >= first_test])
        if len(targets) > self.s["max_pairs"]:
            targets = targets[np.linspace(0, len(targets) - 1, self.s["max_pairs"]).astype(int)]
        return targets, in_sample

    def __call__(self, params: Any, rng: jax.Array) -> dict[str, float]:
        out: dict[str, float] = {}
        for split in ("val", "test") if self.num_val else ("test",):
            prefix = "val_" if split == "val" else ""
            for k in self.s["strides"]:
                targets, in_sample = self.pairs(int(k), split)
                out.update({prefix + key: v for key, v in
                            self._score(params, rng, int(k), targets).items()})
                out["next_frame_in_sample"] = float(in_sample)
        return out

    def _jitted(self, kind: str, k: int, fn: Any) -> Any:
        """One jitted function per (kind, k), kept across calls: the trainer evaluates every
        `eval_every` steps, and a fresh jax.jit each time would recompile each time."""
        key = (kind, k)
        if key not in self._jit_cache:
            self._jit_cache[key] = jax.jit(fn)
        return self._jit_cache[key]

    def _score(self, params: Any, rng: jax.Array, k: int, targets: np.ndarray
               ) -> dict[str, float]:
        from vdiff.eval import image_metrics
        from vdiff.eval.nnf import next_frame_psnr
        from vdiff.methods import sinfusion_apps as apps

        prev = jnp.asarray(self.frames[targets - k])
        real = self.frames[targets]
        copy = image_metrics.psnr(prev, real, data_range=2.0)  # the baseline predicts prev
        out = {f"copy_last_frame_psnr_k{k}": float(jnp.mean(copy)),
               f"next_frame_pairs_k{k}": float(len(targets))}
        rng_k = jax.random.fold_in(rng, k)
        n = int(self.s["num_samples"])
        if n:
            sample = self._jitted("sample", k, lambda p, r, c: apps.sample_frames(
                self.method, p, r, c.shape, cond=c, frame_diff=k, eta=self.s["eta"]))
            preds = [sample(params, jax.random.fold_in(rng_k, i), prev) for i in range(n)]
            out[f"next_frame_psnr_k{k}"] = next_frame_psnr(preds[0], real, prev,
                                                           data_range=2.0)["psnr"]
            if n > 1:
                mean = jnp.mean(jnp.stack(preds), axis=0)
                out[f"next_frame_psnr_mean{n}_k{k}"] = next_frame_psnr(
                    mean, real, prev, data_range=2.0)["psnr"]
        if self.s["posterior_mean"] and self.method.parameterization in ("x0", "v"):
            mean = self._jitted("posterior_mean", k, lambda p, r, c: apps.posterior_mean_frames(
                self.method, p, r, c.shape, cond=c, frame_diff=k))(params, rng_k, prev)
            out[f"next_frame_psnr_posterior_mean_k{k}"] = next_frame_psnr(
                mean, real, prev, data_range=2.0)["psnr"]
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
            x = jnp.asarray(self.clips[start:start + bs], jnp.float32) / 127.5 - 1.0
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
}
APPLIES_TO = {"fvd": ("vdm", "vdm_sr", "pvdm_ldm"), "sinfusion_next_frame": ("sinfusion",),
              "pvdm_reconstruction": ("pvdm_ae",)}


def build_evaluators(config: Any, method: Any, mesh: Any) -> list[tuple[str, Any]]:
    """Instantiates `config.evals` entries that apply to this method (others are logged)."""
    out = []
    for name, given in config.evals.items():
        if name not in EVALUATORS:
            raise ConfigError(f"unknown evaluator config.evals.{name}; known: "
                              f"{sorted(EVALUATORS)}")
        if config.method not in APPLIES_TO[name] or (
                name == "sinfusion_next_frame" and getattr(method, "role", "") != "predictor"):
            logging.info("evaluator %s does not apply to this run; skipped", name)
            continue
        settings = settings_for(name, EVALUATORS[name].DEFAULTS, given)
        out.append((name, EVALUATORS[name](config, method, mesh, settings)))
    return out


def run_evaluators(evaluators: list[tuple[str, Any]], params: Any,
                   rng: jax.Array) -> dict[str, float]:
    results: dict[str, float] = {}
    for i, (name, evaluator) in enumerate(evaluators):
        t0 = time.perf_counter()
        results.update(evaluator(params, jax.random.fold_in(rng, i)))
        logging.info("evaluator %s took %.1f s", name, time.perf_counter() - t0)
    return results
