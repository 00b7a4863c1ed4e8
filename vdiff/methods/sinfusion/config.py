"""SinFusion's config: the defaults (every key a run reads), the frame and crop shapes they
imply, and the per-role run configs of a workdir that trains several roles."""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from vdiff import config_lib
from vdiff.errors import ConfigError

ROLE_PARAMETERIZATION = {"image": "x0", "projector": "x0", "predictor": "eps",
                         "interpolator": "x0"}


def sinfusion_defaults(role: str = "predictor") -> ml_collections.ConfigDict:
    """Every key a SinFusion run reads (train/sample/mesh/sharding as in `vdm_defaults`).

    data (one training video, or one image with num_frames = 1; pipeline keys as in
    `vdm_defaults`, read by the 'single_video' source):
      name            'single_video'
      source_dir      the video file, frame folder or image to train on
      first_frame, end_frame  its segment [first_frame, end_frame) (0, 0: the whole file):
                      training, evaluation and applications number frames from first_frame
      max_frames      train on the segment's first max_frames (0: all of it); the rest of
                      the segment is held out for the next-frame evaluation
      channels        3 (RGB)
      num_frames      T, frames of the training video in every batch (1 for role 'image')
      resolution      shorter frame side after loading (aspect kept)
      frame_size      (H, W) of the frames as loaded — the method's static shapes; its
                      shorter side must equal resolution; (0, 0) = read from the file
      crop_fraction   crop side / frame side (≈ 0.95 in the paper), one crop for all T frames
    model (NextNet):
      width, depth, mult   channels, ConvNeXt blocks, widening of the 3×3 conv pair (64, 16, 2)
      dtype                compute dtype ('float32' | 'bfloat16' | 'float16'); params float32
    diffusion:
      schedule             log-SNR schedule name (schedules.get_schedule), training = sampling
      logsnr_min/max       its clipping range
      parameterization     'eps' | 'x0' | 'v'; '' → the role's default (ROLE_PARAMETERIZATION)
      loss_space           '' → the parameterization;  weighting: see diffusion.losses
    sinfusion:
      role                 'image' | 'predictor' | 'projector' | 'interpolator'
      max_k                largest |k| of the Predictor (k ∈ [−max_k, max_k] \\ {0}; table size)
      curriculum_stage_steps  train steps per curriculum stage (0: full range from step 0)
      backward             allow k < 0 from the second stage on (needed for backward extrapolation)
      eta                  DDIM η of all sampling (1: ancestral with the posterior variance, 0: ODE)
      correction_level     t of the Projector's truncated-diffusion correction in applications
      sample_num_frames    frames of the trainer's periodic Predictor samples
      residual             Predictor only (x0 parameterization): the network predicts the
                           change x_{n+k} − x_n, so x̂0 = frame n + output (copying the frame
                           is the zero-output starting point instead of something to learn)
      role_depth           per-role NextNet depth overriding model.depth (0: model.depth),
                           e.g. a shallow Predictor (its receptive field limits the motion it
                           can memorise) beside the paper-depth Projector (whose receptive
                           field sets how diverse its samples are)
      context_frames       Predictor only: clean frames it is conditioned on — 1 (the paper:
                           frame n) or c > 1 (frames n, n − k, …, n − (c−1)·k on channels,
                           so a rollout at stride k feeds back its own last c frames): one
                           frame does not determine its motion, two give its velocity
    sample.num_steps       50 diffusion steps for sampling (the full range t ∈ [0, 1])
    """
    if role not in ROLE_PARAMETERIZATION:
        raise ConfigError(f"unknown sinfusion role {role!r}; "
                          f"known: {sorted(ROLE_PARAMETERIZATION)}")
    base = config_lib.vdm_defaults()
    c = ml_collections.ConfigDict()
    c.method = "sinfusion"
    c.seed = 0
    c.data = base.data
    c.data.update(dict(
        name="single_video", source_dir="", channels=3, num_frames=1 if role == "image" else 16,
        resolution=0, frame_size=(0, 0), crop_fraction=0.95, temporal_crop="first",
        num_images_per_video=0))
    c.model = ml_collections.ConfigDict(dict(width=64, depth=16, mult=2, dtype="auto"))
    c.diffusion = ml_collections.ConfigDict(dict(
        schedule="cosine", logsnr_min=-20.0, logsnr_max=20.0, parameterization="",
        loss_space="", weighting="none"))
    c.sinfusion = ml_collections.ConfigDict(dict(
        role=role, max_k=3, curriculum_stage_steps=2000, backward=True, eta=1.0,
        correction_level=0.25, sample_num_frames=8, residual=False,
        context_frames=1, role_depth=ml_collections.ConfigDict(
            {r: 0 for r in ROLE_PARAMETERIZATION})))
    c.train = base.train
    c.train.batch_size, c.train.num_steps = 8, 50_000
    c.train.lr, c.train.warmup_steps, c.train.ema_decay = 2e-4, 500, 0.995
    c.sample = base.sample
    c.sample.num_samples, c.sample.num_steps = 4, 50
    c.evals, c.apps = base.evals, base.apps
    c.mesh = base.mesh
    c.sharding = base.sharding
    return c


def frame_shape(data_config: Any) -> tuple[int, int]:
    """(H, W) = data.frame_size, checked against data.resolution (its shorter side);
    (0, 0) reads it from the source file's header (no decoding)."""
    h, w = (int(v) for v in data_config.frame_size)
    if (h, w) == (0, 0):
        from vdiff.data.single_video import loaded_frame_size

        if not data_config.source_dir:
            raise ConfigError("SinFusion needs data.source_dir: the video or image to train on")
        return loaded_frame_size(data_config.source_dir, resolution=data_config.resolution)
    if data_config.resolution and min(h, w) != data_config.resolution:
        raise ConfigError(f"data.frame_size={(h, w)} must have its shorter side equal to "
                          f"data.resolution={data_config.resolution} (frames are loaded that way)")
    return h, w


def crop_shape(data_config: Any) -> tuple[int, int]:
    """(h, w) = round(crop_fraction · (H, W)), at least 1 pixel each (as the pipeline crops)."""
    f = float(data_config.crop_fraction)
    if not 0.0 < f <= 1.0:
        raise ConfigError(f"data.crop_fraction={f} must be in (0, 1]")
    h, w = frame_shape(data_config)
    return max(1, round(h * f)), max(1, round(w * f))


def role_config(config: Any, role: str) -> Any:
    """The config of one role's run: a copy with sinfusion.role set and, when the config
    trains all roles (role 'all'), that role's train.num_steps from sinfusion.role_steps (the
    step decay then halves the lr at each quarter)."""
    c = config.copy_and_resolve_references()
    with c.unlocked():
        steps = c.sinfusion.get("role_steps", {}).get(role) if c.sinfusion.role == "all" else 0
        c.sinfusion.role = role
        if steps:
            c.train.num_steps = int(steps)
            if c.train.lr_schedule == "step":
                c.train.lr_decay_every = max(1, int(steps) // 4)
        if role == "image":
            c.data.num_frames = 1
        depth = int(c.sinfusion.get("role_depth", {}).get(role, 0))  # absent: older configs
        if depth:
            c.model.depth = depth
    return c


def training_runs(config: Any, workdir: str) -> list[tuple[Any, str]]:
    """(config, workdir) per role to train: role 'all' → predictor, projector, interpolator."""
    role = config.sinfusion.role
    roles = ("predictor", "projector", "interpolator") if role == "all" else (role,)
    return [(role_config(config, r), os.path.join(workdir, r)) for r in roles]
