"""Interpolating between real images with a pretrained latent diffusion model
(Wang & Golland, ICML 2023): schemes, textual inversion, pose guidance, CLIP ranking, the
DreamPose backend, a run's settings (settings.py) and the run itself (runner.py). The
registered method over it is `vdiff.methods.interpolation`; cli.py is its stand-alone CLI."""

from vdiff.interpolation.schemes import (
    SCHEMES, SHAPES, Interpolator, Node, TextDenoiser, ddim_denoise, depth_noise_levels,
    did_schedule, frame_noise_levels, lerp, slerp, text_cond_fn)

__all__ = ["SCHEMES", "SHAPES", "Interpolator", "Node", "TextDenoiser", "ddim_denoise",
           "depth_noise_levels", "did_schedule", "frame_noise_levels", "lerp", "slerp",
           "text_cond_fn"]
