r"""SinFusion applications: pure, jittable functions of params and method objects.

Method objects are the role classes of `vdiff.methods.sinfusion` (or anything with
`denoiser(params, cond=, frame_diff=)`, `schedule`, `num_sample_steps`, `eta`,
`correction_level` and, for a Predictor, `context`); close over them (and over the static
arguments named below) under `jax.jit`. All sampling uses the model's own schedule and the
shared DDIM step (`vdiff.diffusion.samplers`) with η = `method.eta` unless overridden: η = 1
is ancestral sampling with the posterior variance, η = 0 the deterministic ODE sampler.
Frames are float [H, W, C] in [−1, 1].

Truncated diffusion (editing, Projector correction) starts from a given image x at a level
t₀ ∈ (0, 1] instead of pure noise (`samplers.truncated_sample`, x̂0 clipped):

    z_{t₀} = α(t₀) x + σ(t₀) ε,   then DDIM on the grid t_j = t₀ j / M, j = M … 1,
    M = max(1, ⌈N t₀⌉)  (the step size of full N-step sampling),  output x̂0(z_{t₁}).

Static arguments (Python values): `num`, `height`, `width`, `num_frames`, `direction`,
`factor`, and `num_steps` when given; `k`, `noise_level` and `correction_level` may be traced.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import jax
import jax.numpy as jnp

from vdiff.diffusion import samplers
from vdiff.errors import ConfigError

Array = jax.Array

# The shared sampler names SinFusion answers (it samples with the DDIM family only).
SAMPLERS = ("ancestral", "ddim")


def eta_of_sampler(sampler: str, eta: float) -> float:
    """DDIM η of a sampler name: 'ancestral' is η = `eta` (sinfusion.eta; 1 is ancestral
    sampling with the posterior variance), 'ddim' is η = 0, the deterministic ODE sampler."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"SinFusion samples with the DDIM family: sampler 'ancestral' "
                          f"(η = sinfusion.eta) or 'ddim' (η = 0), not {sampler!r}")
    return float(eta) if sampler == "ancestral" else 0.0


def _steps_eta(method: Any, num_steps: int | None, eta: float | None) -> tuple[int, float]:
    return (method.num_sample_steps if num_steps is None else num_steps,
            method.eta if eta is None else eta)


def sample_frames(method: Any, params: Any, rng: Array, shape: tuple[int, ...], *,
                  cond: Array | None = None, frame_diff: Array | int | None = None,
                  num_steps: int | None = None, eta: float | None = None) -> Array:
    """Full DDIM sampling from z₁ ~ N(0, I) of frames [B, H, W, C] given clean frames `cond`."""
    n, eta = _steps_eta(method, num_steps, eta)
    fn = method.denoiser(params, cond=cond, frame_diff=frame_diff)
    return samplers.ddim_sample(denoise_fn=fn, rng=rng, shape=tuple(shape),
                                logsnr_schedule=method.schedule, num_steps=n, eta=eta,
                                clip_x0=True)


def posterior_mean_frames(method: Any, params: Any, rng: Array, shape: tuple[int, ...], *,
                          cond: Array | None = None,
                          frame_diff: Array | int | None = None) -> Array:
    """The model's E[x | cond] in one network call: x̂0 at the noisiest level λ(1), where
    z₁ carries almost no information about x (α₁² = sigmoid(λ(1))), so the x0-prediction
    — trained with squared error — is the posterior mean: the point estimate PSNR rewards,
    which a mean of N samples only approximates. For x0 / v parameterizations; an ε-model's
    x̂0 there divides by α₁ ≈ 0."""
    fn = method.denoiser(params, cond=cond, frame_diff=frame_diff)
    z = jax.random.normal(rng, tuple(shape))
    logsnr = jnp.full((shape[0],), method.schedule(jnp.float32(1.0)), jnp.float32)
    return jnp.clip(fn(z, logsnr), -1.0, 1.0)


def t_from_logsnr(schedule: Any, logsnr: Array | float, *, iters: int = 40) -> Array:
    """t with λ(t) = logsnr, by bisection on [0, 1] (λ is non-increasing in t)."""
    target = jnp.asarray(logsnr, jnp.float32)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        right = schedule(mid) > target  # still too clean: the level lies at larger t
        return jnp.where(right, mid, lo), jnp.where(right, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iters, body, (jnp.float32(0.0), jnp.float32(1.0)))
    return 0.5 * (lo + hi)


def project(projector: Any, params: Any, rng: Array, frames: Array,
            level: Array | float | None, *, num_steps: int | None = None,
            eta: float | None = None) -> Array:
    """Projector correction of frames [B, H, W, C]: truncated diffusion from t₀ = `level`
    (None → projector.correction_level). No projector or a level of 0 leaves frames as is."""
    if projector is None:
        return frames
    level = projector.correction_level if level is None else level
    if isinstance(level, (int, float)) and level <= 0:
        return frames
    n, eta = _steps_eta(projector, num_steps, eta)
    with jax.named_scope("projector_correction"):
        return samplers.truncated_sample(
            denoise_fn=projector.denoiser(params), rng=rng, x=frames, t_start=level,
            logsnr_schedule=projector.schedule, num_steps=n, eta=eta, clip_x0=True)


def generate_images(image_method: Any, params: Any, rng: Array, num: int, height: int,
                    width: int, *, num_steps: int | None = None,
                    eta: float | None = None) -> Array:
    """Diverse samples [num, height, width, C] of the single-image model at any size."""
    with jax.named_scope("generate_images"):
        return sample_frames(image_method, params, rng, (num, height, width,
                                                         image_method.channels),
                             num_steps=num_steps, eta=eta)


def edit_image(image_method: Any, params: Any, rng: Array, image: Array,
               noise_level: Array | float, *, level: Literal["t", "logsnr"] = "t",
               num_steps: int | None = None, eta: float | None = None) -> Array:
    """Sketch-to-image / editing: noise `image` ([H, W, C] or [B, H, W, C]) to `noise_level`
    (t₀ ∈ (0, 1], or a log-SNR when level='logsnr') and denoise (truncated diffusion)."""
    single = image.ndim == 3
    x = image[None] if single else image
    n, eta = _steps_eta(image_method, num_steps, eta)
    with jax.named_scope("edit_image"):
        t0 = (t_from_logsnr(image_method.schedule, noise_level) if level == "logsnr"
              else noise_level)
        out = samplers.truncated_sample(
            denoise_fn=image_method.denoiser(params), rng=rng, x=x, t_start=t0,
            logsnr_schedule=image_method.schedule, num_steps=n, eta=eta, clip_x0=True)
    return out[0] if single else out


def generate_video(predictor: Any, projector: Any, params_pred: Any, params_proj: Any,
                   rng: Array, first_frame: Array, num_frames: int, k: Array | int = 1,
                   correction_level: Array | float | None = None, *,
                   num_steps: int | None = None, eta: float | None = None,
                   history: Array | None = None) -> Array:
    """[num_frames, H, W, C]: frame 0 is `first_frame` [H, W, C]; frame i + 1 is the
    Predictor's sample given frame i (and, with `context_frames` c > 1, frames i − 1 …
    i − c + 1 of the rollout) with frame difference k, then corrected by the Projector
    (truncated diffusion from `correction_level`; projector None or level 0: no correction).
    `history` [c − 1, H, W, C]: the real frames k, 2k, … before `first_frame`, most recent
    first; without it the first frame is repeated (no motion known yet)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be ≥ 1, got {num_frames}")
    context = predictor.context
    first = jnp.asarray(first_frame, jnp.float32)
    past = (jnp.repeat(first[None], context - 1, axis=0) if history is None
            else jnp.asarray(history, jnp.float32))
    if past.shape[0] != context - 1:
        raise ValueError(f"history has {past.shape[0]} frames; the Predictor conditions on "
                         f"{context} (give {context - 1})")

    def next_frame(recent: Array, step_rng: Array) -> tuple[Array, Array]:
        # recent: the last `context` frames [c, H, W, C], most recent first
        with jax.named_scope("video_frame"):
            rng_pred, rng_proj = jax.random.split(step_rng)
            cond = jnp.concatenate(list(recent), axis=-1)[None]
            frame = sample_frames(predictor, params_pred, rng_pred, (1, *recent.shape[1:]),
                                  cond=cond, frame_diff=k, num_steps=num_steps, eta=eta)
            frame = project(projector, params_proj, rng_proj, frame, correction_level,
                            num_steps=num_steps, eta=eta)[0].astype(recent.dtype)
        return jnp.concatenate([frame[None], recent[:-1]], axis=0), frame

    if num_frames == 1:
        return first[None]
    with jax.named_scope("generate_video"):
        _, rest = jax.lax.scan(next_frame, jnp.concatenate([first[None], past], axis=0),
                               jax.random.split(rng, num_frames - 1))
    return jnp.concatenate([first[None], rest], axis=0)


def extrapolate(predictor: Any, projector: Any, params_pred: Any, params_proj: Any,
                rng: Array, frame: Array, num_frames: int, *, direction: int = 1,
                k: Array | int = 1, correction_level: Array | float | None = None,
                num_steps: int | None = None, eta: float | None = None,
                history: Array | None = None) -> Array:
    """num_frames frames in temporal order around the real `frame` [H, W, C]: forward
    (direction +1, frame first, steps of +|k|) or backward (−1, steps of −|k|, frame last).
    `history`: see `generate_video` (the real frames |k|, 2|k|, … before `frame` in the
    direction of generation, most recent first, for a Predictor with context_frames > 1)."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    video = generate_video(predictor, projector, params_pred, params_proj, rng, frame,
                           num_frames, k=direction * jnp.abs(jnp.asarray(k, jnp.int32)),
                           correction_level=correction_level, num_steps=num_steps, eta=eta,
                           history=history)
    return video if direction > 0 else video[::-1]


def temporal_upsample(interpolator: Any, projector: Any, params_interp: Any,
                      params_proj: Any, rng: Array, video: Array, factor: int = 2,
                      correction_level: Array | float | None = None, *,
                      num_steps: int | None = None, eta: float | None = None) -> Array:
    """×factor frame rate (factor a power of 2) of video [T, H, W, C] → [(T − 1)·factor + 1, …].

    ×2: output frame 2i is input frame i and frame 2i + 1 the Interpolator's sample given
    frames (i, i + 1) as its (n, n + 2), then Projector-corrected. ×4 = ×2 twice, so input
    frame i stays at position factor·i.
    """
    passes = int(round(math.log2(factor))) if factor >= 1 else -1
    if passes < 0 or 2**passes != factor:
        raise ValueError(f"factor must be a power of 2, got {factor}")
    out = jnp.asarray(video, jnp.float32)
    for p in range(passes):
        with jax.named_scope(f"temporal_upsample_x2_{p}"):
            rng_interp, rng_proj = jax.random.split(jax.random.fold_in(rng, p))
            cond = jnp.concatenate([out[:-1], out[1:]], axis=-1)
            mids = sample_frames(interpolator, params_interp, rng_interp, out[:-1].shape,
                                 cond=cond, num_steps=num_steps, eta=eta)
            mids = project(projector, params_proj, rng_proj, mids, correction_level,
                           num_steps=num_steps, eta=eta)
            pairs = jnp.stack([out[:-1], mids], axis=1).reshape(-1, *out.shape[1:])
            out = jnp.concatenate([pairs, out[-1:]], axis=0)
    return out
