"""Finished DreamPose runs: their configs and weights, and the model a config names."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from vdiff import runtime
from vdiff.errors import ConfigError
from vdiff.models import dreampose as dp


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    from vdiff.core.workdir import config_path, read_config

    cfg = read_config(workdir)
    if cfg is None:
        raise ConfigError(f"{workdir!r} holds no DreamPose run ({config_path(workdir)} is "
                          "missing): train one first (python -m vdiff.main "
                          "--config=configs/dreampose_*.py --workdir=...)")
    return cfg


def load_animation_config(workdir: str) -> ml_collections.ConfigDict:
    """The config of a DreamPose run that holds a diffusion model (a dataset, subject or
    VAE-decoder run), read before any weights so bad inputs fail fast."""
    config = load_run_config(workdir)
    if config.method not in ("dreampose", "dreampose_vae") or (
            config.dreampose.stage == "vae_pretrain"):
        raise ConfigError(f"{workdir} is a {config.method}/{config.dreampose.stage} run "
                          "without a diffusion model; pass the subject or VAE-decoder run")
    return config


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
    """(config, params as numpy) of a finished DreamPose run: the EMA params when the run
    kept an EMA (train.ema_decay > 0), else the raw params."""
    from vdiff.train.checkpoint import load_raw

    cfg = load_run_config(workdir)
    try:
        _, state, _ = load_raw(os.path.join(workdir, "checkpoints"))
    except FileNotFoundError:
        raise ConfigError(f"{workdir} has a config but no checkpoint (weights): was its "
                          "training interrupted before the first save?") from None
    key = "ema_params" if float(cfg.train.ema_decay) > 0 else "params"
    return cfg, jax.tree.map(np.asarray, state[key])


def build_model(config: Any) -> dp.DreamPoseModel:
    """The architecture named by `config.model` (weights are loaded elsewhere)."""
    m = config.model
    impl = runtime.attention_impl(m.attention_impl)
    if not m.sd:
        cfgs = dp.tiny_configs(m.size)
        cfgs["vae"] = dataclasses.replace(cfgs["vae"], scaling_factor=float(m.scaling_factor))
        return dp.DreamPoseModel.from_configs(**cfgs, dtype=m.dtype, remat=bool(m.remat),
                                              attention_impl=impl)
    from vdiff.models.sd import convert
    from vdiff.models.sd.clip import CLIPVisionConfig
    from vdiff.models.sd.latent_diffusion import DiscreteSchedule, load_scheduler_config
    from vdiff.models.sd.unet import UNetConfig
    from vdiff.models.sd.vae import VAEConfig

    clip_root = m.clip or os.path.join(m.sd, "image_encoder")
    for path in (os.path.join(m.sd, "unet"), os.path.join(m.sd, "vae"), clip_root):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ConfigError(f"missing {path}/config.json: model.sd must be a diffusers SD "
                              "folder and model.clip a CLIP vision folder with projection")
    sched = load_scheduler_config(m.sd)
    return dp.DreamPoseModel.from_configs(
        unet=UNetConfig.from_diffusers_config(convert.load_config(os.path.join(m.sd, "unet"))),
        vae=VAEConfig.from_diffusers_config(convert.load_config(os.path.join(m.sd, "vae"))),
        clip=CLIPVisionConfig.from_transformers_config(convert.load_config(clip_root)),
        dtype=m.dtype, remat=bool(m.remat), attention_impl=impl,
        schedule=DiscreteSchedule.from_scheduler_config(sched),
        prediction_type=sched.get("prediction_type", "epsilon"))
