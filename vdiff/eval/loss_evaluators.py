"""Evaluators that score the model on fixed held-out data without sampling: the training
loss on batches of the training and the held-out split (`heldout_loss`), and the PVDM
autoencoder's reconstruction quality (`pvdm_reconstruction`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vdiff.errors import ConfigError
from vdiff.core.pixels import to_unit_range


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
