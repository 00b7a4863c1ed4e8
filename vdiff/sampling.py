"""`--mode=sample`: runs an application of the run's method (`Method.applications`).

This module holds VDM's (unconditional, extend, interpolate, super-resolve: `sample_windows`),
the cascaded SR stage's (`cascade_super_resolve`) and PVDM's (`run_pvdm_sampling`);
SinFusion's are in vdiff/methods/sinfusion/sampling.py.

    python -m vdiff.main --mode=sample --config=configs/vdm_digits.py --workdir=DIR \
        --application=extend --num_frames=64 --sampler=ddim --num_steps=64

Restores the EMA parameters of the latest checkpoint and writes, under a new
`WORKDIR/samples/<application>_step<step>_<sampler>-<steps>_seed<seed>[_label<L>]/`
(`output_dir`; or --output_dir), one mp4 and one gif per sample, a PNG grid and
`samples.npz` (uint8 videos [N, T, H, W, C]).

Applications use the model's own window length T (the training `data.num_frames`):
- extend: sample a first window (or start from --input_video), then repeatedly
  sample a window whose first T/2 frames are the last T/2 frames so far, keeping
  the new half — conditioned with reconstruction guidance on the unobserved frames
  plus replacement of the observed ones (VDM's form, default) or replacement alone;
- interpolate: 2× temporal upsampling; every even output frame is an input frame
  and the odd frames are sampled in windows that overlap by one input frame, so each
  new frame lies between two observed frames of its window (2·T_in − 1 frames out);
- super_resolve: reconstruction guidance through average-pooling: an unconditional
  model at resolution R fills in a video given at R/f.
Without --input_video, interpolate and super_resolve start from a fresh sample
(downsampled by f for super_resolve), so they work from a checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vdiff import outputs, progress
from vdiff.core import workdir as workdir_lib
# restore_ema_params and CheckpointNotFoundError are imported from here by notebooks
from vdiff.core.checkpoints import CheckpointNotFoundError, restore_ema_params  # noqa: F401
from vdiff.data import video_io
from vdiff.diffusion import guidance, samplers
from vdiff.errors import ConfigError, InputError
from vdiff.eval import image_metrics
from vdiff.methods import get_method, method_class
from vdiff.train import sharding
from vdiff.core.pixels import to_unit_range


# `config.sample` keys that are also the defaults of `--mode=sample` (SampleOptions.resolve);
# sample.num_samples stays the periodic samples' count (the CLI default is 4 videos).
SHARED_SAMPLE_SETTINGS = ("sampler", "num_steps", "guidance_scale", "fps")


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
    # SinFusion applications (vdiff/methods/sinfusion/sampling.py)
    input_image: str = ""  # edit: the image to noise and denoise
    noise_level: float = 0.5  # edit: t₀ ∈ (0, 1]
    height: int = 0  # images: output size (0 = the training frame size)
    width: int = 0
    start_frame: int = 0  # video/extrapolate: real frame to start from (video: -1 = Projector)
    direction: str = "forward"  # extrapolate: forward | backward
    upsample_factor: int = 2  # upsample: 2 or 4

    @classmethod
    def resolve(cls, config: Any, given: dict[str, Any]) -> "SampleOptions":
        """The options of one `--mode=sample` call, from (later wins) the defaults above,
        the config's shared sampling settings (`config.sample`: sampler, num_steps,
        guidance_scale, fps), its `config.apps.<application>` settings, and `given` (the
        flags set on the command line)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(given) - fields
        if unknown:
            raise ConfigError(f"unknown sampling options {sorted(unknown)}")
        sample = config.get("sample") or {}
        values = {k: sample[k] for k in SHARED_SAMPLE_SETTINGS if k in sample}
        given = dict(given)
        application = given.setdefault("application", method_class(config).default_application
                                       if config.get("method") else cls.application)
        app_settings = dict((config.get("apps") or {}).get(application) or {})
        unknown = set(app_settings) - fields - {"application"}
        if unknown:
            raise ConfigError(f"config.apps.{application} has unknown settings "
                              f"{sorted(unknown)}; known: {sorted(fields - {'application'})}")
        values.update(app_settings)
        values.update(given)
        return cls(**values)

    def check(self) -> None:
        """Checks the options any application reads; the application itself is looked up
        in the run's method (`Method.application`)."""
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


def _progress(denoise_fn: Callable, bar: progress.Progress) -> Callable:
    """Ticks `bar` once per network evaluation (a host callback from inside the jitted loop)."""
    def ticked(z, logsnr):
        jax.debug.callback(lambda _: bar.update(1), logsnr[0])
        return denoise_fn(z, logsnr)
    return ticked


def _tick_hook(bar: progress.Progress) -> Callable:
    """A sampler `post_step_fn` that ticks `bar` once per step: once per network evaluation
    (`pc` calls it after every corrector step too), for samplers run inside a method."""
    def hook(z, logsnr, rng):
        del rng
        jax.debug.callback(lambda _: bar.update(1), logsnr[0])
        return z
    return hook


class WindowSampler:
    """Jitted samplers of one model window [N, T, H, W, C], free or conditioned on frames."""

    def __init__(self, method: Any, params: Any, opts: SampleOptions, labels: jax.Array | None):
        d = method.config.data
        self.method, self.params, self.opts, self.labels = method, params, opts, labels
        self.window = d.num_frames
        self.shape = (opts.num_samples, d.num_frames, d.resolution, d.resolution, method.channels)
        self.nfe = samplers.num_function_evals(opts.sampler, opts.num_steps, **opts.sampler_kwargs)
        self.bar = progress.Progress(f"sampling {opts.application}", unit="NFE")
        self._planned = 0
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

    def plan(self, windows: int) -> None:
        """Announces the windows an application will sample, so that the progress total (and
        its ETA) covers the whole run from the first window on."""
        self._planned += windows
        self.bar.add_total(windows * self.nfe)

    def _tick_total(self, windows: int) -> None:
        if self._planned >= windows:
            self._planned -= windows
        else:
            self.bar.add_total(windows * self.nfe)

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
    """Autoregressive extension to `total` frames, half a window of context at a time.

    A `start` shorter than T/2 frames (down to one) conditions the first window on the frames
    it has; the mask is an argument of the jitted window sampler, so this costs no recompile.
    """
    t = ws.window
    keep = t // 2
    rng, sub = jax.random.split(rng)
    video = ws.free(sub) if start is None else start
    while video.shape[1] < total:
        rng, sub = jax.random.split(rng)
        given = min(keep, video.shape[1])
        context = video[:, video.shape[1] - given:]
        pad = jnp.zeros((video.shape[0], t - given, *video.shape[2:]), video.dtype)
        window = ws.frames(sub, jnp.concatenate([context, pad], axis=1), np.arange(t) < given)
        video = jnp.concatenate([video, window[:, given:]], axis=1)
    return video[:, :total]


def extend_windows(window: int, total: int, start_frames: int = 0) -> int:
    """How many windows :func:`extend` samples (for its progress total)."""
    count, have = (0, start_frames) if start_frames else (1, window)
    while have < total:
        have += window - min(window // 2, have)
        count += 1
    return count


def interpolation_windows(num_input: int, window: int) -> tuple[list[int], int]:
    """Layout of :func:`interpolate`: window starts in the output and the span each keeps.

    Output frame 2i is input frame i, 2·num_input − 1 frames in all, so the last frame is
    observed.  A window starts on an observed frame (even position) and keeps `span` frames
    ending on one (span = T for odd T; for even T the window's last frame has no observed
    right neighbour, so it is sampled but dropped: span = T − 1).  Consecutive windows share
    their boundary observed frame (stride span − 1), so every new frame is made once, between
    two observed frames of its own window (non-overlapping windows extrapolated one per window).
    """
    span = window if window % 2 else window - 1
    if span < 3:
        raise ConfigError(f"interpolate needs a model window of ≥ 3 frames, got {window}")
    return list(range(0, 2 * num_input - 2, span - 1)), span


def interpolate(ws: WindowSampler, rng: jax.Array, video: jax.Array) -> jax.Array:
    """2× temporal upsampling: output frame 2i is input frame i (2·T_in − 1 frames); the odd
    frames are sampled in overlapping windows (:func:`interpolation_windows`)."""
    t = ws.window
    n, t_in = video.shape[:2]
    length = 2 * t_in - 1
    starts, span = interpolation_windows(t_in, t)
    total = max([length] + [s + t for s in starts])  # the last window may run past the end
    out = jnp.zeros((n, total, *video.shape[2:]), video.dtype).at[:, 0:length:2].set(video)
    for start in starts:
        rng, sub = jax.random.split(rng)
        idx = np.arange(start, start + t)
        mask = (idx % 2 == 0) & (idx < length)
        window = ws.frames(sub, out[:, start:start + t], mask)
        # keep only the new frames (odd positions) inside the span: observed ones stay exact
        out = out.at[:, start + 1:start + span - 1:2].set(window[:, 1:span - 1:2])
    return out[:, :length]


def _batch_psnr(a: Any, b: Any) -> float:
    """One PSNR in dB of two batches of videos in [−1, 1] (range 2): the MSE over every
    pixel of the batch, not a mean of per-frame PSNRs, so each batch is passed to
    `image_metrics.psnr` as a single [N·T·H, W, C] image."""
    whole = lambda v: jnp.reshape(jnp.asarray(v), (-1, *np.shape(v)[-2:]))  # noqa: E731
    return float(image_metrics.psnr(whole(a), whole(b), data_range=2.0))


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
        truth = to_unit_range(jnp.asarray(batch["video"]))
        low = method.downsample(truth)
        if method.num_classes:
            labels = jnp.asarray(batch["label"])
    bar = progress.Progress("sampling super_resolve", unit="NFE", total=samplers.num_function_evals(
        opts.sampler, opts.num_steps, **opts.sampler_kwargs))
    fn = jax.jit(lambda p, r, x: method.upsample(
        p, r, x, labels=labels, sampler=opts.sampler, num_steps=opts.num_steps,
        guidance_scale=opts.guidance_scale, post_step_fn=_tick_hook(bar),
        **opts.sampler_kwargs))
    with bar:
        out = jax.block_until_ready(fn(params, rng, low))
    if truth is not None:
        from vdiff.methods.vdm.super_res import upsample_nearest
        extra["psnr_db"] = _batch_psnr(out, truth)
        extra["psnr_db_nearest_upsampling"] = _batch_psnr(upsample_nearest(low, method.factor),
                                                          truth)
        logging.info("super-resolution PSNR %.2f dB (nearest-neighbour upsampling: %.2f dB)",
                     extra["psnr_db"], extra["psnr_db_nearest_upsampling"])
    return out, extra


def load_input_video(path: str, *, channels: int, size: int, min_frames: int) -> np.ndarray:
    """Input video as float [T, size, size, channels] in [−1, 1]; clear errors on mismatch."""
    frames = video_io.read_video(path)
    if frames.shape[1:3] != (size, size):
        raise InputError(f"input video {path} is {frames.shape[2]}x{frames.shape[1]} but this "
                         f"application needs {size}x{size} frames")
    if frames.shape[0] < min_frames:
        raise InputError(f"input video {path} has {frames.shape[0]} frames; need ≥ {min_frames}")
    x = to_unit_range(frames)
    return x.mean(axis=-1, keepdims=True) if channels == 1 else x[..., :channels]


def output_dir(workdir: str, opts: SampleOptions, step: int, num_classes: int = 0) -> str:
    """--output_dir as given, else a new `WORKDIR/samples/<application>_step<N>_<sampler>-
    <steps>_seed<S>[_label<L>|_classes]` (with `-1`, `-2`, … if taken: never overwritten)."""
    if opts.output_dir:
        return opts.output_dir
    name = outputs.sample_dir_name(
        opts.application, step=step, seed=opts.seed, sampler=opts.sampler,
        num_steps=opts.num_steps, guidance_scale=opts.guidance_scale,
        num_classes=num_classes, label=opts.label)
    return outputs.unique_output_dir(os.path.join(workdir, "samples", name))


def run_sampling(config: Any, workdir: str, opts: SampleOptions) -> str:
    """Runs `opts.application` of the run's method (its `applications` table) and writes
    the outputs. `config` is checked against and completed from the run's own config.json."""
    opts.check()
    config = workdir_lib.run_config(config, workdir)
    return method_class(config).application(opts.application)(config, workdir, opts)


def _setup(config: Any, opts: SampleOptions) -> tuple[Any, Any, SampleOptions, int]:
    """(method, mesh, opts with num_samples rounded up, the requested number). The batch is
    sharded over the data axes: sample a multiple of their size, keep the requested number."""
    method = get_method(config)
    mesh = sharding.make_mesh(config.mesh.shape)
    requested = opts.num_samples
    opts = dataclasses.replace(
        opts, num_samples=sharding.round_up_to_data_parallel(requested, mesh))
    return method, mesh, opts, requested


def _labels(method: Any, opts: SampleOptions) -> jax.Array | None:
    """--label for every sample, else a cycle through the classes; None without classes."""
    if not method.num_classes:
        return None
    labels = label_flag(opts.label, method.num_classes, opts.num_samples)
    if labels is None:
        labels = jnp.arange(opts.num_samples, dtype=jnp.int32) % method.num_classes
    return labels


def _write(videos: np.ndarray, workdir: str, opts: SampleOptions, step: int, method: Any,
           requested: int, nfe: int, extra: dict[str, Any]) -> str:
    directory = output_dir(workdir, opts, step, method.num_classes)
    info = {"step": step, "params": "ema", **dataclasses.asdict(opts), "num_samples": requested,
            "frames": int(videos.shape[1]), "nfe_per_window": nfe, **extra}
    outputs.write_videos(videos, directory, fps=opts.fps, info=info)
    logging.info("wrote %d %s videos of %d frames to %s", videos.shape[0], opts.application,
                 videos.shape[1], directory)
    return directory


def sample_windows(config: Any, workdir: str, opts: SampleOptions) -> str:
    """VDM's applications: unconditional, extend, interpolate, and super_resolve by
    reconstruction guidance with an unconditional model (module docstring)."""
    method, mesh, opts, requested = _setup(config, opts)
    d = config.data
    x = None
    if opts.input_video:  # a bad file fails here, before restoring and compiling
        sr = opts.application == "super_resolve"
        x = load_input_video(opts.input_video, channels=method.channels,
                             size=d.resolution // opts.sr_factor if sr else d.resolution,
                             min_frames=d.num_frames if sr else 1)
    params, step = restore_ema_params(config, workdir, method, mesh)
    labels = _labels(method, opts)
    rng = jax.random.key(opts.seed)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules_from_config(
            config.sharding.logical_axis_rules)):
        ws = WindowSampler(method, params, opts, labels)
        start = None if x is None else jnp.broadcast_to(jnp.asarray(x)[None],
                                                        (opts.num_samples, *x.shape))
        rng, sub = jax.random.split(rng)
        if opts.application == "unconditional":
            videos = ws.free(sub)
        elif opts.application == "extend":
            total = opts.num_frames or 4 * d.num_frames
            ws.plan(extend_windows(d.num_frames, total, 0 if start is None else start.shape[1]))
            videos = extend(ws, sub, total, start)
        elif opts.application == "interpolate":
            ws.plan(len(interpolation_windows(d.num_frames if start is None else start.shape[1],
                                              d.num_frames)[0]) + (start is None))
            base = ws.free(sub) if start is None else start
            rng, sub = jax.random.split(rng)
            videos = interpolate(ws, sub, base)
        else:  # super_resolve by reconstruction guidance with an unconditional model
            if d.resolution % opts.sr_factor:
                raise ConfigError(f"--sr_factor={opts.sr_factor} must divide {d.resolution}")
            low = (guidance.downsample_observe_fn(opts.sr_factor)(ws.free(sub)) if start is None
                   else start[:, :d.num_frames])
            rng, sub = jax.random.split(rng)
            videos = ws.super_resolve(sub, low, opts.sr_factor)
        videos = np.asarray(jax.device_get(videos))[:requested]
        ws.bar.close()
    return _write(videos, workdir, opts, step, method, requested, ws.nfe, {})


def cascade_super_resolve(config: Any, workdir: str, opts: SampleOptions) -> str:
    """VDMSuperRes's application: its own low-resolution input (--input_video, else the
    held-out split, scored by PSNR) upsampled by the cascaded stage."""
    method, mesh, opts, requested = _setup(config, opts)
    d = config.data
    x = None
    if opts.input_video:  # a bad file fails here, before restoring and compiling
        x = load_input_video(opts.input_video, channels=method.channels,
                             size=d.resolution // method.factor, min_frames=d.num_frames)
    params, step = restore_ema_params(config, workdir, method, mesh)
    labels = _labels(method, opts)
    rng = jax.random.key(opts.seed)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules_from_config(
            config.sharding.logical_axis_rules)):
        start = None if x is None else jnp.broadcast_to(jnp.asarray(x)[None],
                                                        (opts.num_samples, *x.shape))
        rng, sub = jax.random.split(rng)
        videos, extra = _cascade_super_resolve(method, params, sub, opts, labels, start)
        videos = np.asarray(jax.device_get(videos))[:requested]
    nfe = samplers.num_function_evals(opts.sampler, opts.num_steps, **opts.sampler_kwargs)
    return _write(videos, workdir, opts, step, method, requested, nfe, extra)


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
    bar = progress.Progress(f"sampling {opts.application}", unit="NFE", total=clips *
                            samplers.num_function_evals(opts.sampler, opts.num_steps, **kwargs))
    with bar, jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules_from_config(
            config.sharding.logical_axis_rules)):
        fn = jax.jit(lambda p, r: method.generate_long_video(
            p, r, num, frames, sampler=opts.sampler, num_steps=opts.num_steps,
            labels=labels, guidance_scale=opts.guidance_scale, post_step_fn=_tick_hook(bar),
            **kwargs))
        videos = np.asarray(jax.device_get(fn(params, jax.random.key(opts.seed))))[:requested]
    directory = output_dir(workdir, opts, step, method.num_classes)
    info = {"step": step, "params": "ema", **dataclasses.asdict(opts), "num_samples": requested,
            "frames": int(videos.shape[1]), "clips": clips}
    outputs.write_videos(videos, directory, fps=opts.fps, info=info)
    logging.info("wrote %d videos of %d frames to %s", videos.shape[0], videos.shape[1],
                 directory)
    return directory
