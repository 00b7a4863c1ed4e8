"""PVDM config defaults: every key a pvdm_ae (autoencoder) or pvdm_ldm (latent diffusion)
run reads, with their documentation."""

from __future__ import annotations

import ml_collections

from vdiff import config_lib
from vdiff.errors import ConfigError

STAGES = ("pvdm_ae", "pvdm_ldm")


def pvdm_defaults(stage: str) -> ml_collections.ConfigDict:
    """Every key a PVDM run reads (data/train/sample/mesh/sharding as in `vdm_defaults`).

    model (stage pvdm_ae, the autoencoder):
      patch_size, latent_channels, width, encoder_depth, decoder_depth, projection_depth,
      head_dim, mlp_ratio, remat, attention_impl ('xla' | 'cudnn'), dtype
    model (stage pvdm_ldm, the triplane UNet):
      base_channels, channel_mults, num_res_blocks, attn_levels (downsampling levels with
      joint attention; level i = factor 2^i), head_dim, dropout, remat, attention_impl, dtype,
      axis_positions (coordinate features in joint attention; models/pvdm_unet.py; off),
      plane_inputs (one-hot plane identity channels at the UNet's input, so its shared
      convolutions can treat content and motion planes differently; on; configs saved
      before it existed read as off),
      num_classes (0: unconditional; else batch["label"] in [0, n) conditions the UNet,
      dropped to the null class n with probability diffusion.cond_drop_prob, so sampling
      can use classifier-free guidance)
    pvdm (autoencoder):
      l1_weight, lpips_weight, lpips_net ('alexnet' | 'vgg16'), lpips_frames (frames per
      clip scored by LPIPS each step, 0 = all), gan_start_step (−1: no adversarial stage),
      gan_weight, gan_weight_mode ('adaptive' | 'scheduled'), gan_ramp_steps,
      adaptive_max_weight, disc_channels, disc_layers, disc_lr, disc_b1, disc_b2
      latent_noise          σ: training decodes z + σ·N(0, I) instead of z (0: off). The
                            decoder learns to tolerate latent errors of that size (a latent
                            model's samples are never exact), and since z is tanh-bounded
                            the encoder can only beat the noise with well-separated codes
    pvdm (latent diffusion):
      autoencoder_workdir   the trained pvdm_ae run (its config.json and latest checkpoint),
                            or a folder from `python -m vdiff.methods.pvdm WORKDIR OUT`
      clip_frames           S, frames per clip (= the autoencoder's data.num_frames)
      cond_prob             λ: probability of conditioning on the previous clip (0: off);
                            data.num_frames must be 2S when λ > 0
      sample_num_frames     length of the trainer's periodic samples (0: data.num_frames)
      cache_latents         encode every training example once at the start and train from
                            the cached latents (no encoder in the train step: at the digits
                            setting the frozen encoder is 70 % of the step's FLOPs). Needs
                            a dataset of fixed clips: stored length = data.num_frames, no
                            flips (moving digits)
      sample_labels         classes the periodic samples and the sampling evaluators cycle
                            through (class-conditional models; empty: 0 … num_classes − 1);
                            their guidance weight is sample.guidance_scale (evaluators: their
                            own guidance_scale setting)
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown PVDM stage {stage!r}; known: {STAGES}")
    base = config_lib.vdm_defaults()
    c = ml_collections.ConfigDict()
    c.method, c.seed = stage, 0
    c.data = base.data
    c.data.update(dict(name="ucf101", channels=3, num_frames=16, resolution=256,
                       random_flip=True, temporal_crop="random"))
    if stage == "pvdm_ae":
        c.model = ml_collections.ConfigDict(dict(
            patch_size=8, latent_channels=4, width=384, encoder_depth=8, decoder_depth=8,
            projection_depth=2, head_dim=64, mlp_ratio=4.0, remat=False, attention_impl="auto",
            dtype="auto"))
    else:
        c.model = ml_collections.ConfigDict(dict(
            base_channels=256, channel_mults=(1, 2, 4, 4), num_res_blocks=2,
            attn_levels=(0, 1, 2), head_dim=64, dropout=0.0, remat=False,
            attention_impl="auto", dtype="auto", axis_positions=False, plane_inputs=True,
            num_classes=0))
    c.diffusion = base.diffusion
    # the official schedule: LDM's betas, linear in √β from 0.0015 to 0.0195 (λ ends ≈ −8.8);
    # 'linear_beta' (DDPM's 1e-4 to 0.02, λ ends ≈ −10) trained every result before it
    c.diffusion.update(dict(parameterization="eps", loss_space="eps",
                            schedule="scaled_linear_beta", cond_drop_prob=0.0))
    c.pvdm = ml_collections.ConfigDict(dict(
        l1_weight=1.0, lpips_weight=1.0, lpips_net="alexnet", lpips_frames=4,
        gan_start_step=-1, gan_weight=0.1, gan_weight_mode="adaptive", gan_ramp_steps=2000,
        adaptive_max_weight=1.0, disc_channels=64, disc_layers=3, disc_lr=1e-4,
        disc_b1=0.5, disc_b2=0.9, latent_noise=0.0,
        autoencoder_workdir="", clip_frames=16, cond_prob=0.5, sample_num_frames=0,
        cache_latents=False, sample_labels=()))
    c.train = base.train
    c.train.update(dict(batch_size=8, num_steps=100_000, lr=1e-4, warmup_steps=0, b1=0.9,
                        b2=0.999, weight_decay=0.0, ema_decay=0.0))
    c.sample = base.sample
    c.sample.sampler, c.sample.num_steps = "ddim", 100
    c.evals, c.apps = base.evals, base.apps
    c.mesh = base.mesh
    c.sharding = base.sharding
    return c
