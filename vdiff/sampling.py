"""Sampling from a trained run: unconditional, extend, interpolate, super-resolve.

    python -m vdiff.main --mode=sample --config=configs/vdm_digits.py --workdir=DIR \
        --application=extend --num_frames=64 --sampler=ddim --num_steps=64

Restores the EMA parameters of the latest checkpoint and writes, under
`WORKDIR/samples/<application>_step<step>/` (or --output_dir), one mp4 and one gif
per sample, a PNG grid and `samples.npz` (uint8 videos [N, T, H, W, C]).

Applications use the model's own window length T (the training `data.num_frames`):
- extend: sample a first window (or start from --input_video), then repeatedly
  sample a window whose first T/2 frames are the last T/2 frames so far, keeping
  the new half — conditioned with reconstruction guidance on the unobserved frames
  plus replacement of the observed ones (VDM's form, default) or replacement alone;
- interpolate: 2× temporal upsampling; every even output frame is an input frame
  and the odd frames are sampled, window by window;
- super_resolve: reconstruction guidance through average-pooling: an unconditional
  model at resolution R fills in a video given at R/f.
Without --input_video, interpolate and super_resolve start from a fresh sample
(downsampled by f for super_resolve), so they work from a checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from vdiff.data import video_io
from vdiff.diffusion import guidance, samplers
from vdiff.errors import ConfigError
from vdiff.methods import get_method
from vdiff.train import sharding
from vdiff.train.checkpoint import Checkpointer
from vdiff.train.setup import build_train_fns

APPLICATIONS = ("unconditional", "extend", "interpolate", "super_resolve")
SINFUSION_APPLICATIONS = ("images", "edit", "video", "extrapolate", "upsample")


class CheckpointNotFoundError(RuntimeError):
    """No checkpoint to sample from; the message says where it looked."""


@dataclasses.dataclass
class SampleOptions:
    application: str = "unconditional"
    sampler: str = "ancestral"
    num_steps: int = 128
    num_samples: int = 4
    num_frames: int = 0  # output length for `extend` (0: 4 windows)
    seed: int = 0
    label: int = -1  # class for class-conditional models (-1: cycle through classes)
    guidance_scale: float = 0.0  # classifier-free guidance weight w: (1+w)ε(c) − wε(∅)
    conditioning: str = "reconstruction"  # or 'replacement'
    recon_weight: float = 4.0  # w_r of reconstruction guidance
    sr_factor: int = 2
    input_video: str = ""
    output_dir: str = ""
    fps: int = 8
    sampler_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    # SinFusion applications (vdiff/sinfusion_sampling.py)
    input_image: str = ""  # edit: the image to noise and denoise
    noise_level: float = 0.5  # edit: t₀ ∈ (0, 1]
    height: int = 0  # images: output size (0 = the training frame size)
    width: int = 0
    start_frame: int = 0  # video/extrapolate: real frame to start from (video: -1 = Projector)
    direction: str = "forward"  # extrapolate: forward | backward
    upsample_factor: int = 2  # upsample: 2 or 4

    def check(self) -> None:
        known = APPLICATIONS + SINFUSION_APPLICATIONS
        if self.application not in known:
            raise ConfigError(f"unknown application {self.application!r}; use one of {known}")
        if self.direction not in ("forward", "backward"):
            raise ConfigError("direction must be 'forward' or 'backward'")
        if not 0 < self.noise_level <= 1:
            raise ConfigError(f"noise_level must be in (0, 1], got {self.noise_level}")
        if self.sampler not in samplers.sampler_names():
            raise ConfigError(f"unknown sampler {self.sampler!r}; use one of "
                              f"{samplers.sampler_names()}")
        if self.conditioning not in ("reconstruction", "replacement"):
            raise ConfigError("conditioning must be 'reconstruction' or 'replacement'")
        if self.num_steps < 1 or self.num_samples < 1:
            raise ConfigError("num_steps and num_samples must be positive")


def restore_ema_params(config: Any, workdir: str, method: Any, mesh: Any) -> tuple[Any, int]:
    """EMA params of the latest checkpoint in `workdir`, placed with the config's sharding."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise CheckpointNotFoundError(
            f"no checkpoints in {directory}: train first with --mode=train and the same "
            f"--config and --workdir")
    ckpt = Checkpointer(directory, max_to_keep=1, save_every=0, async_save=False)
    step = ckpt.latest_step()
    if step is None:
        raise CheckpointNotFoundError(f"{directory} holds no complete checkpoint")
    fns = build_train_fns(config, method, mesh)
    state, _ = ckpt.restore(step, fns.abstract_state)
    ckpt.close()
    return state.ema_params, step


def _progress(denoise_fn: Callable, bar: tqdm) -> Callable:
    """Ticks `bar` once per network evaluation (a host callback from inside the jitted loop)."""
    def ticked(z, logsnr):
        jax.debug.callback(lambda _: bar.update(1), logsnr[0])
        return denoise_fn(z, logsnr)
    return ticked


class WindowSampler:
    """Jitted samplers of one model window [N, T, H, W, C], free or conditioned on frames."""

    def __init__(self, method: Any, params: Any, opts: SampleOptions, labels: jax.Array | None):
        d = method.config.data
        self.method, self.params, self.opts, self.labels = method, params, opts, labels
        self.window = d.num_frames
        self.shape = (opts.num_samples, d.num_frames, d.resolution, d.resolution, method.channels)
        self.nfe = samplers.num_function_evals(opts.sampler, opts.num_steps, **opts.sampler_kwargs)
        self.bar = tqdm(total=0, unit="NFE", dynamic_ncols=True, disable=None)
        self._free = jax.jit(self._free_fn)
        self._frames = jax.jit(self._frames_fn)
        self._sr = jax.jit(self._sr_fn, static_argnums=2)

    def _denoiser(self, params):
        fn = self.method.denoiser(params, labels=self.labels, guidance_scale=self.opts.guidance_scale)
        return _progress(fn, self.bar)

    def _run(self, denoise_fn, rng, **kwargs):
        # Data lives in [−1, 1]: clip every x̂0 the sampler uses (and so the output).
        options = {"clip_x0": True, **self.opts.sampler_kwargs, **kwargs}
        return samplers.sample(sampler=self.opts.sampler, denoise_fn=denoise_fn, rng=rng,
                               shape=self.shape, logsnr_schedule=self.method.schedule,
                               num_steps=self.opts.num_steps, **options)

    def _free_fn(self, params, rng):
        return self._run(self._denoiser(params), rng)

    def _frames_fn(self, params, rng, video, frame_mask):
        """Frames where frame_mask [T] is True are given by `video`; the rest are sampled."""
        denoise = self._denoiser(params)
        mask = guidance.video_frame_mask(frame_mask)
        if self.opts.conditioning == "reconstruction":
            # VDM's form: z^a is replaced by q(z_s | x^a) and the guidance gradient acts on
            # z^b only, so the given frames are reproduced exactly and the rest follow them.
            observe = guidance.frame_mask_observe_fn(frame_mask)
            denoise = guidance.reconstruction_guided_denoiser(
                denoise, observation=observe(video), observe_fn=observe,
                weight=self.opts.recon_weight, grad_mask=1.0 - mask.astype(jnp.float32))
        denoise = guidance.replacement_denoiser(denoise, observation=video, mask=mask)
        return self._run(denoise, rng,
                         post_step_fn=guidance.replacement_post_step(observation=video, mask=mask))

    def _sr_fn(self, params, rng, factor, low):
        observe = guidance.downsample_observe_fn(factor)
        denoise = guidance.reconstruction_guided_denoiser(
            self._denoiser(params), observation=low, observe_fn=observe,
            weight=self.opts.recon_weight)
        return self._run(denoise, rng)

    def _tick_total(self, windows: int) -> None:
        self.bar.total += windows * self.nfe
        self.bar.refresh()

    def free(self, rng) -> jax.Array:
        self._tick_total(1)
        return self._free(self.params, rng)

    def frames(self, rng, video, frame_mask) -> jax.Array:
        self._tick_total(1)
        return self._frames(self.params, rng, video, jnp.asarray(frame_mask, bool))

    def super_resolve(self, rng, low, factor: int) -> jax.Array:
        self._tick_total(1)
        return self._sr(self.params, rng, factor, low)


def extend(ws: WindowSampler, rng: jax.Array, total: int, start: jax.Array | None) -> jax.Array:
    """Autoregressive extension to `total` frames, half a window of context at a time."""
    t = ws.window
    keep = t // 2
    rng, sub = jax.random.split(rng)
    video = ws.free(sub) if start is None else start
    mask = np.arange(t) < keep
    while video.shape[1] < total:
        rng, sub = jax.random.split(rng)
        context = video[:, -keep:]
        pad = jnp.zeros((video.shape[0], t - keep, *video.shape[2:]), video.dtype)
        window = ws.frames(sub, jnp.concatenate([context, pad], axis=1), mask)
        video = jnp.concatenate([video, window[:, keep:]], axis=1)
    return video[:, :total]


def interpolate(ws: WindowSampler, rng: jax.Array, video: jax.Array) -> jax.Array:
    """2× temporal upsampling: output frame 2i is input frame i; odd frames are sampled."""
    t = ws.window
    n, t_in = video.shape[:2]
    spread = jnp.zeros((n, 2 * t_in, *video.shape[2:]), video.dtype).at[:, ::2].set(video)
    pad = (-spread.shape[1]) % t
    spread = jnp.concatenate([spread, jnp.zeros((n, pad, *video.shape[2:]), video.dtype)], 1)
    out = []
    for start in range(0, spread.shape[1], t):
        rng, sub = jax.random.split(rng)
        idx = np.arange(start, start + t)
        mask = (idx % 2 == 0) & (idx < 2 * t_in)
        out.append(ws.frames(sub, spread[:, start:start + t], mask))
    return jnp.concatenate(out, axis=1)[:, :2 * t_in]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of videos in [−1, 1] (peak-to-peak 2)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float(10 * np.log10(4.0 / max(mse, 1e-12)))


def _cascade_super_resolve(method, params, rng, opts: SampleOptions, labels, start):
    """Cascaded SR: low-res input from --input_video, else the held-out split (with PSNR)."""
    d = method.config.data
    extra: dict[str, Any] = {"sr_method": "cascade", "factor": method.factor}
    if start is not None:
        low, truth = start[:, :d.num_frames], None
    else:
        from vdiff.data import pipeline
        it = pipeline.make_iterator(d, split="test", seed=opts.seed,
                                    global_batch_size=opts.num_samples, shuffle=False)
        batch = next(it)
        truth = jnp.asarray(batch["video"], jnp.float32) / 127.5 - 1.0
        low = method.downsample(truth)
        if method.num_classes:
            labels = jnp.asarray(batch["label"])
    fn = jax.jit(lambda p, r, x: method.upsample(
        p, r, x, labels=labels, sampler=opts.sampler, num_steps=opts.num_steps,
        guidance_scale=opts.guidance_scale, **opts.sampler_kwargs))
    out = fn(params, rng, low)
    if truth is not None:
        from vdiff.methods.vdm_sr import upsample_nearest
        extra["psnr_db"] = psnr(out, truth)
        extra["psnr_db_nearest_upsampling"] = psnr(upsample_nearest(low, method.factor), truth)
        logging.info("super-resolution PSNR %.2f dB (nearest-neighbour upsampling: %.2f dB)",
                     extra["psnr_db"], extra["psnr_db_nearest_upsampling"])
    return out, extra


def load_input_video(path: str, *, channels: int, size: int, min_frames: int) -> np.ndarray:
    """Input video as float [T, size, size, channels] in [−1, 1]; clear errors on mismatch."""
    frames = video_io.read_video(path)
    if frames.shape[1:3] != (size, size):
        raise ConfigError(f"input video {path} is {frames.shape[2]}x{frames.shape[1]} but this "
                          f"application needs {size}x{size} frames")
    if frames.shape[0] < min_frames:
        raise ConfigError(f"input video {path} has {frames.shape[0]} frames; need ≥ {min_frames}")
    x = frames.astype(np.float32)
    x = x.mean(axis=-1, keepdims=True) if channels == 1 else x[..., :channels]
    return x / 127.5 - 1.0


def write_outputs(videos: np.ndarray, directory: str, *, fps: int, info: dict) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    frames = video_io.to_uint8(videos)
    paths = []
    for i, v in enumerate(frames):
        for ext in ("mp4", "gif"):
            path = os.path.join(directory, f"sample_{i:02d}.{ext}")
            try:
                video_io.write_video(path, v, fps=fps)
            except video_io.FFmpegNotFoundError as e:  # gif needs no ffmpeg
                logging.warning("%s: skipped %s", e, os.path.basename(path))
                continue
            paths.append(path)
    video_io.write_grid_png(os.path.join(directory, "grid.png"), frames)
    np.savez_compressed(os.path.join(directory, "samples.npz"), videos=frames)
    with open(os.path.join(directory, "info.json"), "w") as f:
        json.dump(info, f, indent=2)
    return paths


def run_sampling(config: Any, workdir: str, opts: SampleOptions) -> str:
    """Restores the latest EMA params, runs the application and writes the outputs."""
    opts.check()
    if config.method == "sinfusion":
        from vdiff.sinfusion_sampling import run_sinfusion_sampling

        return run_sinfusion_sampling(config, workdir, opts)
    if config.method in ("pvdm_ae", "pvdm_ldm"):
        return run_pvdm_sampling(config, workdir, opts)
    if opts.application in SINFUSION_APPLICATIONS:
        raise ConfigError(f"--application={opts.application} is a SinFusion application; "
                          f"{config.method} has {APPLICATIONS}")
    method = get_method(config)
    mesh = sharding.make_mesh(config.mesh.shape)
    d = config.data
    # The batch is sharded over the data axes: sample a multiple of their size, keep the
    # requested number.
    requested = opts.num_samples
    opts = dataclasses.replace(
        opts, num_samples=sharding.round_up_to_data_parallel(requested, mesh))
    if getattr(method, "upsample", None) is not None and opts.application != "super_resolve":
        raise ConfigError(f"{config.method} is a super-resolution stage: use "
                          f"--application=super_resolve")
    params, step = restore_ema_params(config, workdir, method, mesh)
    labels = None
    if method.num_classes:
        labels = label_flag(opts.label, method.num_classes, opts.num_samples)
        if labels is None:  # cycle through the classes
            labels = jnp.arange(opts.num_samples, dtype=jnp.int32) % method.num_classes
    rng = jax.random.key(opts.seed)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules_from_config(
            config.sharding.logical_axis_rules)):
        ws = WindowSampler(method, params, opts, labels)
        start = None
        if opts.input_video:
            factor = getattr(method, "factor", opts.sr_factor)
            in_size = d.resolution // factor if opts.application == "super_resolve" \
                else d.resolution
            x = load_input_video(opts.input_video, channels=method.channels, size=in_size,
                                 min_frames=d.num_frames if opts.application == "super_resolve"
                                 else 1)
            start = jnp.broadcast_to(jnp.asarray(x)[None], (opts.num_samples, *x.shape))
        rng, sub = jax.random.split(rng)
        extra: dict[str, Any] = {}
        if opts.application == "unconditional":
            videos = ws.free(sub)
        elif opts.application == "extend":
            total = opts.num_frames or 4 * d.num_frames
            videos = extend(ws, sub, total, start)
        elif opts.application == "interpolate":
            base = ws.free(sub) if start is None else start
            rng, sub = jax.random.split(rng)
            videos = interpolate(ws, sub, base)
        elif getattr(method, "upsample", None) is not None:  # a cascaded SR model
            videos, extra = _cascade_super_resolve(method, params, sub, opts, labels, start)
        else:  # super_resolve by reconstruction guidance with an unconditional model
            if d.resolution % opts.sr_factor:
                raise ConfigError(f"--sr_factor={opts.sr_factor} must divide {d.resolution}")
            low = (guidance.downsample_observe_fn(opts.sr_factor)(ws.free(sub)) if start is None
                   else start[:, :d.num_frames])
            rng, sub = jax.random.split(rng)
            videos = ws.super_resolve(sub, low, opts.sr_factor)
        videos = np.asarray(jax.device_get(videos))[:requested]
        ws.bar.close()
    directory = opts.output_dir or os.path.join(workdir, "samples",
                                                f"{opts.application}_step{step:07d}")
    info = {"step": step, "params": "ema", **dataclasses.asdict(opts), "num_samples": requested,
            "frames": int(videos.shape[1]), "nfe_per_window": ws.nfe, **extra}
    write_outputs(videos, directory, fps=opts.fps, info=info)
    logging.info("wrote %d %s videos of %d frames to %s", videos.shape[0], opts.application,
                 videos.shape[1], directory)
    return directory


def label_flag(label: int, num_classes: int, num: int) -> jax.Array | None:
    """--label as int32 [num] labels (None for −1), or a clear error for a class the model
    does not have."""
    if label < 0:
        return None
    if label >= num_classes:
        raise ConfigError(f"--label={label} but the model has {num_classes} classes "
                          "(model.num_classes)")
    return jnp.full((num,), label, jnp.int32)


def run_pvdm_sampling(config: Any, workdir: str, opts: SampleOptions) -> str:
    """PVDM latent model: `unconditional` = data.num_frames frames, `extend` = a long video
    of --num_frames (default 8 clips), clip by clip (`PVDMLatentStage.generate_long_video`)."""
    if config.method == "pvdm_ae":
        raise ConfigError("the PVDM autoencoder stage generates nothing: sample from a "
                          "pvdm_ldm run, or use --mode=eval for reconstruction PSNR/LPIPS")
    if opts.application not in ("unconditional", "extend"):
        raise ConfigError(f"--application={opts.application}: PVDM has 'unconditional' "
                          "and 'extend' (long videos)")
    method = get_method(config)
    mesh = sharding.make_mesh(config.mesh.shape)
    requested = opts.num_samples
    num = sharding.round_up_to_data_parallel(requested, mesh)
    params, step = restore_ema_params(config, workdir, method, mesh)
    frames = opts.num_frames or (8 * method.clip_frames if opts.application == "extend"
                                 else int(config.data.num_frames))
    kwargs = dict(opts.sampler_kwargs)
    if opts.sampler == "ancestral":
        kwargs.setdefault("gamma", config.sample.gamma)
    clips = -(-frames // method.clip_frames)
    labels = label_flag(opts.label, method.num_classes, num)  # None: the method's cycle
    logging.info("sampling %d videos of %d frames (%d clips, %s, %d steps each)", requested,
                 frames, clips, opts.sampler, opts.num_steps)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules_from_config(
            config.sharding.logical_axis_rules)):
        fn = jax.jit(lambda p, r: method.generate_long_video(
            p, r, num, frames, sampler=opts.sampler, num_steps=opts.num_steps,
            labels=labels, guidance_scale=opts.guidance_scale, **kwargs))
        videos = np.asarray(jax.device_get(fn(params, jax.random.key(opts.seed))))[:requested]
    directory = opts.output_dir or os.path.join(workdir, "samples",
                                                f"{opts.application}_step{step:07d}")
    info = {"step": step, "params": "ema", **dataclasses.asdict(opts), "num_samples": requested,
            "frames": int(videos.shape[1]), "clips": clips}
    write_outputs(videos, directory, fps=opts.fps, info=info)
    logging.info("wrote %d videos of %d frames to %s", videos.shape[0], videos.shape[1],
                 directory)
    return directory
