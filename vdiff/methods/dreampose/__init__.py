"""DreamPose (Karras et al. 2023): pose-conditioned image-to-video finetuning of a latent
image diffusion model (`vdiff.models.dreampose`).

    config.py     dreampose_defaults: every key of both methods
    stages.py     'dreampose' (dataset, subject stages) and 'dreampose_vae' (VAE stages)
    runs.py       a finished run's config and weights, the model a config names
    animation.py  animate: a photo + poses → frames, and its compiled-sampler cache
    cli.py        the animate command (`python -m vdiff.dreampose_cli`)
"""

from vdiff.methods.dreampose.animation import animate
from vdiff.methods.dreampose.config import DIFFUSION_STAGES, VAE_STAGES, dreampose_defaults
from vdiff.methods.dreampose.runs import (build_model, load_animation_config, load_run,
                                          load_run_config)
from vdiff.methods.dreampose.stages import DECODER_KEYS, DreamPose, DreamPoseVAE

__all__ = ["DECODER_KEYS", "DIFFUSION_STAGES", "DreamPose", "DreamPoseVAE", "VAE_STAGES",
           "animate", "build_model", "dreampose_defaults", "load_animation_config",
           "load_run", "load_run_config"]
