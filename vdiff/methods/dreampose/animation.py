"""DreamPose animation: one subject image + a pose sequence → frames, sampled frame by frame
with dual classifier-free guidance, and the cache of its compiled per-chunk samplers."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vdiff import progress
from vdiff.data import pose as pose_lib
from vdiff.diffusion import samplers
from vdiff.errors import ConfigError
from vdiff.models import dreampose as dp


def animate(model: dp.DreamPoseModel, params: Any, image: np.ndarray, poses: np.ndarray,
            rng: jax.Array, *, s_image: float = 2.0, s_pose: float = 4.0,
            num_steps: int = 25, sampler: str = "ddim", shared_noise: bool = False,
            frame_batch: int = 8, window_radius: int = 2) -> np.ndarray:
    """One subject image [H, W, 3] in [−1, 1] + pose maps [T, H, W, 2] → video [T, H, W, 3].

    Each frame is sampled independently (frame by frame, `frame_batch` at a time) with dual
    classifier-free guidance; frame t sees the window p_{t−2..t+2}. shared_noise: every frame
    uses the same noise (the same sampler RNG), which keeps the appearance steadier."""
    image = np.asarray(image, np.float32)
    poses = np.asarray(poses, np.float32)
    if image.ndim != 3 or poses.ndim != 4 or poses.shape[-1] != dp.POSE_CHANNELS_PER_FRAME:
        raise ConfigError(f"animate needs image [H, W, 3] and poses [T, H, W, 2], got "
                          f"{image.shape} and {poses.shape}")
    if poses.shape[1:3] != image.shape[:2]:
        raise ConfigError(f"pose maps are {poses.shape[1:3]} but the image is "
                          f"{image.shape[:2]}")
    windows = pose_lib.pose_windows(poses, window_radius)
    t_total = len(windows)
    f = min(frame_batch, t_total)
    fn = _animate_chunk_fn(model, sampler, int(num_steps))
    rngs = (jnp.stack([rng] * t_total) if shared_noise
            else jax.random.split(rng, t_total))
    out = []
    for start in progress.track(range(0, t_total, f), f"DreamPose: {t_total} frames",
                                unit=f"batches of {f}"):
        chunk = windows[start:start + f]
        r = rngs[start:start + f]
        pad = f - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
            r = jnp.concatenate([r, jnp.stack([r[-1]] * pad)])
        frames = fn(params, jnp.asarray(image), jnp.asarray(chunk), r,
                    jnp.float32(s_image), jnp.float32(s_pose))
        out.append(np.asarray(frames)[:f - pad])
    return np.concatenate(out)


_CHUNK_FNS: dict[Any, Any] = {}


def _animate_chunk_fn(model: dp.DreamPoseModel, sampler: str, num_steps: int):
    key = (id(model), sampler, num_steps)
    if key in _CHUNK_FNS:
        return _CHUNK_FNS[key][1]
    if sampler not in samplers.sampler_names():
        raise ConfigError(f"unknown sampler {sampler!r}; known: {samplers.sampler_names()}")

    def run(params, image, windows, rngs, s_image, s_pose):
        context = model.image_context(params, image[None])               # [1, L, D]
        h = image.shape[0] // model.downsample_factor
        w = image.shape[1] // model.downsample_factor
        pose = model.pose_to_latent(windows, (h, w))                     # [F, h, w, 10]

        def one(pose_f, rng_f):
            fn = model.denoiser(params, context, pose_f[None], s_image=s_image, s_pose=s_pose)
            return samplers.sample(sampler=sampler, denoise_fn=fn, rng=rng_f,
                                   shape=(1, h, w, model.latent_channels),
                                   logsnr_schedule=model.schedule.logsnr,
                                   num_steps=num_steps)[0]

        latents = jax.vmap(one)(pose, rngs)
        return model.decode(params, latents)

    fn = jax.jit(run)
    _CHUNK_FNS[key] = (model, fn)  # keeps the model alive so its id stays unique
    return fn
