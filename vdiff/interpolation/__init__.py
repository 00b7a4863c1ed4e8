"""Interpolating between real images with a pretrained latent diffusion model
(Wang & Golland, ICML 2023): schemes, textual inversion, pose guidance, CLIP ranking."""

from vdiff.interpolation.schemes import (  # noqa: F401
    SCHEMES, SHAPES, Interpolator, Node, TextDenoiser, ddim_denoise, depth_noise_levels,
    did_schedule, frame_noise_levels, lerp, slerp, text_cond_fn)
