"""The SinFusion Predictor's next-frame evaluator (`sinfusion_next_frame`): PSNR of frames
predicted from real earlier frames on held-out frames, against copying the earlier frame,
and the shrinkage of the predicted change fitted on validation frames (`best_shrinkage`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vdiff.errors import ConfigError
from vdiff.core.pixels import to_unit_range


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
    (`vdiff.methods.sinfusion.apps.posterior_mean_frames`). `num_samples` = 0 skips sampling (posterior
    mean only: one network call per frame, cheap enough for `train.eval_every`).

    `validation_frames` = V > 0 splits the held-out frames: targets among the first V after
    the training frames are the validation set, reported with a `val_` prefix, and the rest
    the test set (the unprefixed keys). Choosing a checkpoint by its validation score
    (early stopping) then leaves the test score unbiased. Frames are those of the data
    segment [data.first_frame, data.end_frame) of the video, so train, validation and test
    frames all lie inside it; `next_frame_{train,val,test}_{first,last}` name each split's
    frames by their numbers in the video file (first and last, inclusive; the test split
    is the training frames when the result is in-sample).

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
        from vdiff.data.single_video import load_frames, segment

        del mesh
        self.method, self.s = method, settings
        d = config.data
        self.first_frame = segment(d)["first_frame"]  # frame 0 here is this frame of the file
        frames = load_frames(d.source_dir, resolution=d.resolution, channels=d.channels,
                             **segment(d))
        self.frames = to_unit_range(frames)
        self.num_train = int(d.num_frames) if d.max_frames else len(frames)
        self.num_val = int(settings["validation_frames"])
        self._jit_cache: dict[tuple[str, int], Any] = {}
        if self.num_val and self.num_train + self.num_val >= len(frames):
            raise ConfigError(
                f"config.evals.sinfusion_next_frame.validation_frames={self.num_val} leaves no "
                f"test frames: the video (its data segment) has {len(frames)} frames and "
                f"{self.num_train} train")
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
        out.update(self.split_frames())
        return out

    def split_frames(self) -> dict[str, float]:
        """First and last frame (inclusive, numbered as in the video file) of the train,
        validation (with validation_frames) and test frames."""
        n, first_test = len(self.frames), self.num_train + self.num_val
        held_out = self.num_train < n
        spans = {"train": (0, min(self.num_train, n) - 1),
                 "test": (first_test, n - 1) if held_out else (0, n - 1)}
        if self.num_val:
            spans["val"] = (self.num_train, first_test - 1)
        return {f"next_frame_{split}_{end}": float(self.first_frame + v)
                for split, span in spans.items() for end, v in zip(("first", "last"), span)}

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
        from vdiff.methods.sinfusion import apps

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
