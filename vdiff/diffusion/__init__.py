"""Diffusion maths: log-SNR schedules, ε/x0/v conversions, losses and samplers (pure functions)."""

from vdiff.diffusion.losses import WEIGHTINGS, diffusion_loss, loss_weight, masked_mean, sample_logsnr
from vdiff.diffusion.samplers import ancestral_posterior, ancestral_sample, ancestral_step
from vdiff.diffusion.schedules import (
    alpha_sigma,
    cosine_betas,
    ddpm_logsnr_table,
    get_schedule,
    linear_betas,
    logsnr_cosine,
    logsnr_cosine_beta,
    logsnr_linear_beta,
    logsnr_shifted_cosine,
    schedule_names,
)
from vdiff.diffusion.targets import (
    PARAMETERIZATIONS,
    bcast_right,
    eps_from_v,
    eps_from_x0,
    predictions,
    q_sample,
    target,
    v_from,
    x0_from_eps,
    x0_from_v,
)

__all__ = [
    "PARAMETERIZATIONS",
    "WEIGHTINGS",
    "alpha_sigma",
    "ancestral_posterior",
    "ancestral_sample",
    "ancestral_step",
    "bcast_right",
    "cosine_betas",
    "ddpm_logsnr_table",
    "diffusion_loss",
    "eps_from_v",
    "eps_from_x0",
    "get_schedule",
    "linear_betas",
    "logsnr_cosine",
    "logsnr_cosine_beta",
    "logsnr_linear_beta",
    "logsnr_shifted_cosine",
    "loss_weight",
    "masked_mean",
    "predictions",
    "q_sample",
    "sample_logsnr",
    "schedule_names",
    "target",
    "v_from",
    "x0_from_eps",
    "x0_from_v",
]
