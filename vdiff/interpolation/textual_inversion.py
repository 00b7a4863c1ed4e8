r"""Textual inversion of the interpolation endpoints (Wang & Golland 2023, §3).

The full text-embedding sequences (the text encoder's output, [L, D]) are optimised —
one positive per image and one negative shared by both — so that the model, with
classifier-free guidance between them, predicts the noise of each image well:

    L = mean_i E_{crop, t, ε} ‖ ε − ε̂_cfg(α_t x_i^crop + σ_t ε; pos_i, neg) ‖²

x_i^crop: latents of random resized crops of image i (``num_crops`` per image, made and
encoded once); t uniform over ``level_range`` of the schedule. Adam, lr 1e-4 by default.
Results are cached in ``cache_dir`` as ``textinv_<hash>.npz``, the hash covering the
image bytes, the prompts, the settings and a model id, so a second call with the same
inputs loads them and does no optimisation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vdiff.diffusion import targets
from vdiff.errors import ConfigError

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class InversionSettings:
    steps: int = 200
    learning_rate: float = 1e-4
    num_crops: int = 8
    crop_scale: tuple[float, float] = (0.7, 1.0)
    level_range: tuple[float, float] = (0.02, 0.98)
    guidance_scale: float = 7.5
    eval_samples: int = 8
    seed: int = 0

    def __post_init__(self):
        if self.steps < 0:
            raise ConfigError(f"inversion steps must be >= 0, got {self.steps}")
        if self.num_crops < 1:
            raise ConfigError(f"num_crops must be >= 1, got {self.num_crops}")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")


def random_crops(image: np.ndarray, n: int, scale: tuple[float, float],
                 rng: np.random.Generator) -> np.ndarray:
    """[n, H, W, C]: crop 0 is the image itself, the others random crops of side
    fraction U(scale) at random places, resized back to H × W (bilinear)."""
    h, w, c = image.shape
    out = [np.asarray(image, np.float32)]
    for _ in range(n - 1):
        s = rng.uniform(*scale)
        ch, cw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = jnp.asarray(image[top:top + ch, left:left + cw], jnp.float32)
        out.append(np.asarray(jax.image.resize(crop, (h, w, c), "bilinear")))
    return np.stack(out)


def cache_key(images: np.ndarray, prompts: tuple[str, ...], settings: InversionSettings,
              model_id: str) -> str:
    h = hashlib.sha256()
    arr = np.ascontiguousarray(np.asarray(images, np.float32))
    h.update(str(arr.shape).encode())
    h.update(arr.tobytes())
    h.update(json.dumps({"prompts": list(prompts), "settings": dataclasses.asdict(settings),
                         "model": model_id}, sort_keys=True).encode())
    return h.hexdigest()[:24]


def _loss_fn(denoiser, params, embs, latents, idx, eps, levels, logsnr_fn):
    """ε-MSE averaged over a batch of (image, crop, level, noise)."""
    pos_a, pos_b, neg = embs
    img, crop = idx[:, 0], idx[:, 1]
    x0 = latents[img, crop]
    lam = logsnr_fn(levels)
    z = targets.q_sample(x0=x0, eps=eps, logsnr=lam)
    pos = jnp.where((img == 0)[:, None, None], pos_a[None], pos_b[None])
    cond = {"pos": pos, "neg": jnp.broadcast_to(neg, pos.shape)}
    pred = denoiser.eps(params, z, lam, cond)
    return jnp.mean(jnp.square(pred - eps))


def _draws(key: Array, n: int, num_crops: int, shape, level_range):
    """n pairs (image, crop), levels and noises from one key; images alternate a, b."""
    k1, k2, k3 = jax.random.split(key, 3)
    img = jnp.arange(n) % 2
    crop = jax.random.randint(k1, (n,), 0, num_crops)
    levels = jax.random.uniform(k2, (n,), minval=level_range[0], maxval=level_range[1])
    eps = jax.random.normal(k3, (n,) + tuple(shape), jnp.float32)
    return jnp.stack([img, crop], 1), eps, levels


def invert_embeddings(denoiser: Any, encode_fn: Callable[[Array], Array],
                      logsnr_fn: Callable[[Array], Array], images: np.ndarray,
                      pos_a: Array, pos_b: Array, neg: Array,
                      settings: InversionSettings = InversionSettings(), *,
                      cache_dir: str | None = None, prompts: tuple[str, ...] = (),
                      model_id: str = "", log: Callable[[str], None] | None = None
                      ) -> tuple[Array, Array, Array, dict]:
    """Optimised (pos_a, pos_b, neg) and an info dict {cached, steps_run, loss_before,
    loss_after, cache_path}. ``denoiser`` is a `schemes.TextDenoiser`-like object (its
    ``guidance_scale`` is replaced by settings.guidance_scale for the loss);
    ``images`` [2, H, W, 3] in [−1, 1]."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[0] != 2:
        raise ConfigError(f"textual inversion needs two images [2, H, W, C], got {images.shape}")
    path = None
    if cache_dir:
        key_hex = cache_key(images, tuple(prompts), settings, model_id)
        path = os.path.join(cache_dir, f"textinv_{key_hex}.npz")
        if os.path.isfile(path):
            with np.load(path) as d:
                info = {"cached": True, "steps_run": 0, "cache_path": path,
                        "loss_before": float(d["loss_before"]),
                        "loss_after": float(d["loss_after"])}
                return (jnp.asarray(d["pos_a"]), jnp.asarray(d["pos_b"]),
                        jnp.asarray(d["neg"]), info)
    if hasattr(denoiser, "guidance_scale"):
        denoiser = dataclasses.replace(denoiser, guidance_scale=settings.guidance_scale)
    rng = np.random.default_rng(settings.seed)
    latents = jnp.stack([encode_fn(jnp.asarray(random_crops(im, settings.num_crops,
                                                            settings.crop_scale, rng)))
                         for im in images])                       # [2, crops, h, w, c]
    shape = latents.shape[2:]
    params = denoiser.params
    embs = tuple(jnp.asarray(e, jnp.float32) for e in (pos_a, pos_b, neg))
    opt = optax.adam(settings.learning_rate)
    opt_state = opt.init(embs)

    def loss(embs, key, n):
        idx, eps, levels = _draws(key, n, settings.num_crops, shape, settings.level_range)
        return _loss_fn(denoiser, params, embs, latents, idx, eps, levels, logsnr_fn)

    # One compiled function (loss and gradient on a batch of 2) serves the updates and
    # the before/after evaluation on fixed draws (eval_samples // 2 batches).
    grad_fn = jax.jit(jax.value_and_grad(lambda e, k: loss(e, k, 2)))
    root = jax.random.key(settings.seed)
    eval_keys = [jax.random.fold_in(root, (1 << 20) + j)
                 for j in range(max(1, settings.eval_samples // 2))]
    evaluate = lambda e: float(np.mean([grad_fn(e, k)[0] for k in eval_keys]))  # noqa: E731
    update = jax.jit(lambda g, s, e: opt.update(g, s, e))

    before = evaluate(embs)
    for i in range(settings.steps):
        value, grads = grad_fn(embs, jax.random.fold_in(root, i))
        updates, opt_state = update(grads, opt_state, embs)
        embs = optax.apply_updates(embs, updates)
        if log is not None and (i % 50 == 0 or i == settings.steps - 1):
            log(f"textual inversion step {i + 1}/{settings.steps}: loss {float(value):.5f}")
    after = evaluate(embs)
    info = {"cached": False, "steps_run": settings.steps, "cache_path": path,
            "loss_before": before, "loss_after": after}
    if path is not None:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez(tmp, pos_a=np.asarray(embs[0]), pos_b=np.asarray(embs[1]),
                 neg=np.asarray(embs[2]), loss_before=before, loss_after=after)
        os.replace(tmp, path)
    return embs[0], embs[1], embs[2], info
