"""`--mode=sample` for SinFusion: the five applications over the per-role checkpoints.

A SinFusion workdir holds one run per role (`WORKDIR/{image,predictor,projector,
interpolator}`); each application restores the roles it needs:

    images       diverse images at any size (--height/--width)           image (or projector)
    edit         noise --input_image to --noise_level t₀, denoise          image (or projector)
    video        diverse video of --num_frames: first frame from the Projector (or the real
                 frame --start_frame ≥ 0), then Predictor steps, each Projector-corrected
    extrapolate  forward or backward (--direction) from real frame --start_frame
    upsample     ×2 / ×4 frame rate (--upsample_factor) of the training video
                 (or --input_video) with Interpolator + Projector

The training video's frames are its segment's (data.first_frame, data.end_frame):
--start_frame=0 is frame data.first_frame of the file.

Every application samples with the shared options: --sampler=ancestral (DDIM with
η = sinfusion.eta) or ddim (η = 0) and --num_steps, by default the config's `sample` settings.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vdiff import outputs, progress
from vdiff.core import workdir as workdir_lib
from vdiff.core.checkpoints import restore_ema_params
from vdiff.data.single_video import load_frames, segment
from vdiff.errors import ConfigError
from vdiff.methods.sinfusion import apps
from vdiff.methods.sinfusion.config import role_config
from vdiff.methods.sinfusion.roles import make_sinfusion
from vdiff.train import sharding
from vdiff.core.pixels import to_unit_range

# application -> the roles it restores (the keys are SinFusionModel.applications)
ROLES_NEEDED = {"images": ("image",), "edit": ("image",), "video": ("predictor", "projector"),
                "extrapolate": ("predictor", "projector"),
                "upsample": ("interpolator", "projector")}


def _restore(config: Any, workdir: str, role: str, mesh: Any):
    cfg = workdir_lib.run_config(role_config(config, role), os.path.join(workdir, role))
    method = make_sinfusion(cfg)
    params, step = restore_ema_params(cfg, os.path.join(workdir, role), method, mesh)
    return method, params, step


def _real_frames(config: Any, opts: Any) -> np.ndarray:
    d = config.data
    path = opts.input_video or d.source_dir  # the training video: its segment's frames
    frames = load_frames(path, resolution=d.resolution, channels=d.channels,
                         **({} if opts.input_video else segment(d)))
    return to_unit_range(frames)


def run_sinfusion_sampling(config: Any, workdir: str, opts: Any) -> str:
    """Runs one application (opts from vdiff.sampling.SampleOptions) and writes its outputs."""
    app = opts.application
    if app not in ROLES_NEEDED:
        raise ConfigError(f"SinFusion applications are {sorted(ROLES_NEEDED)}; got {app!r}")
    if opts.guidance_scale:
        raise ConfigError("SinFusion models are unconditional: --guidance_scale does not apply")
    # the shared sampling options: DDIM with η from the sampler name, opts.num_steps steps
    sampling = dict(num_steps=opts.num_steps,
                    eta=apps.eta_of_sampler(opts.sampler, config.sinfusion.eta))
    mesh = sharding.make_mesh((1, -1, 1))  # one sample at a time, params replicated
    roles = ROLES_NEEDED[app]
    if app in ("images", "edit") and not os.path.isdir(os.path.join(workdir, "image")):
        roles = ("projector",)  # the video's Projector is a single-image model of its frames
    restored = {r: _restore(config, workdir, r, mesh) for r in roles}
    steps = {r: s for r, (_, _, s) in restored.items()}
    rng = jax.random.key(opts.seed)
    n = opts.num_samples
    info: dict[str, Any] = {"application": app, "steps": steps, **dataclasses.asdict(opts)}
    with jax.set_mesh(mesh):
        if app in ("images", "edit"):
            method, params, _ = restored[roles[0]]
            h, w = method.frame_shape()
            if app == "images":
                fn = jax.jit(lambda p, r: apps.generate_images(
                    method, p, r, n, opts.height or h, opts.width or w, **sampling))
                out = fn(params, rng)[:, None]
            else:
                if not opts.input_image:
                    raise ConfigError("--application=edit needs --input_image=PATH")
                image = load_frames(opts.input_image, resolution=min(h, w),
                                    channels=method.channels)[0]
                x = jnp.broadcast_to(to_unit_range(jnp.asarray(image)),
                                     (n, *image.shape))
                fn = jax.jit(lambda p, r, x: apps.edit_image(method, p, r, x, opts.noise_level,
                                                           **sampling))
                out = jnp.stack([x, fn(params, rng, x)], axis=1)  # input, edit
        elif app in ("video", "extrapolate"):
            (pred, p_pred, _), (proj, p_proj, _) = restored["predictor"], restored["projector"]
            frames = _real_frames(config, opts)
            length = opts.num_frames or 2 * config.data.num_frames
            rngs = jax.random.split(rng, n)
            if app == "video" and opts.start_frame < 0:
                h, w = proj.frame_shape()
                first = jax.jit(lambda p, r: apps.generate_images(proj, p, r, n, h, w, **sampling))(
                    p_proj, jax.random.fold_in(rng, 1))
            else:
                if not 0 <= opts.start_frame < len(frames):
                    raise ConfigError(f"--start_frame={opts.start_frame} is outside the video's "
                                      f"{len(frames)} frames")
                first = jnp.broadcast_to(jnp.asarray(frames[opts.start_frame]),
                                         (n, *frames.shape[1:]))
            direction = -1 if opts.direction == "backward" else 1
            # a Predictor with more context frames gets the real frames before the start
            # (in the direction of generation) when the video has them
            past = [opts.start_frame - direction * j for j in range(1, pred.context)]
            history = (jnp.asarray(frames[past]) if opts.start_frame >= 0 and past
                       and all(0 <= i < len(frames) for i in past) else None)
            one = jax.jit(lambda pp, pj, r, f: apps.extrapolate(
                pred, proj, pp, pj, r, f, length, direction=direction, history=history,
                **sampling))
            out = jnp.stack([jax.block_until_ready(one(p_pred, p_proj, rngs[i], first[i]))
                             for i in progress.track(range(n), f"sampling {app}", unit="videos")])
            info["direction"] = opts.direction
        else:  # upsample
            (interp, p_int, _), (proj, p_proj, _) = restored["interpolator"], restored["projector"]
            frames = _real_frames(config, opts)
            if opts.num_frames:
                frames = frames[:opts.num_frames]
            fn = jax.jit(lambda pi, pj, r, v: apps.temporal_upsample(
                interp, proj, pi, pj, r, v, factor=opts.upsample_factor, **sampling))
            out = jnp.stack([jax.block_until_ready(fn(p_int, p_proj, jax.random.fold_in(rng, i),
                                                      jnp.asarray(frames)))
                             for i in progress.track(range(n), f"sampling {app}", unit="videos")])
    videos = np.asarray(jax.device_get(out))
    directory = opts.output_dir or outputs.unique_output_dir(os.path.join(
        workdir, "samples", outputs.sample_dir_name(app, step=max(steps.values()),
                                                    seed=opts.seed, sampler=opts.sampler,
                                                    num_steps=opts.num_steps)))
    info["frames"] = int(videos.shape[1])
    outputs.write_videos(videos, directory, fps=opts.fps, info=info)
    logging.info("wrote %d SinFusion %s outputs of %d frames to %s", len(videos), app,
                 videos.shape[1], directory)
    return directory
