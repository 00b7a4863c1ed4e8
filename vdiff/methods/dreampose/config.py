"""DreamPose config defaults: every key a run of either method ('dreampose' diffusion
stages, 'dreampose_vae' VAE stages) reads."""

from __future__ import annotations

import ml_collections

from vdiff import config_lib
from vdiff.errors import ConfigError

DIFFUSION_STAGES = ("dataset", "subject")
VAE_STAGES = ("vae_pretrain", "vae_decoder")


def dreampose_defaults(stage: str) -> ml_collections.ConfigDict:
    """Every key a DreamPose run reads.

    data: name ('synthetic_people' | 'pose_videos'), source_dir (pose_videos root),
      subject_dir (frames/ + poses/ of the subject), resolution, num_subjects, num_frames,
      synthetic_seed, num_subject_photos, crop_min (random-crop side fraction, 1 = off)
    model: sd (diffusers folder; '' = a from-scratch model of `size`, 'tiny' | 'micro'), clip (CLIP vision folder, '' =
      <sd>/image_encoder), scaling_factor (tiny VAE latent scale), dtype, remat,
      attention_impl
    dreampose: stage, init_from (previous stage's workdir), base_vae (tiny: vae_pretrain
      workdir), p_image, p_pose, p_both (condition dropout), train_parts (params that
      train in diffusion stages), kl_weight, l1_weight (VAE stages), s_image, s_pose
    sample: sampler and num_steps of the periodic samples
    """
    if stage not in DIFFUSION_STAGES + VAE_STAGES:
        raise ConfigError(f"unknown DreamPose stage {stage!r}")
    base = config_lib.vdm_defaults()
    c = ml_collections.ConfigDict()
    c.method = "dreampose" if stage in DIFFUSION_STAGES else "dreampose_vae"
    c.seed = 0
    c.data = ml_collections.ConfigDict(dict(
        name="synthetic_people", source_dir="", subject_dir="", resolution=64,
        num_subjects=48, num_frames=24, synthetic_seed=0, num_subject_photos=4,
        crop_min=1.0 if stage in ("dataset", "vae_pretrain") else 0.8, worker_count=0))
    c.model = ml_collections.ConfigDict(dict(
        sd="", clip="", size="tiny", scaling_factor=1.0, dtype="auto", remat=False,
        attention_impl="auto"))
    c.dreampose = ml_collections.ConfigDict(dict(
        stage=stage, init_from="", base_vae="", p_image=0.05, p_pose=0.05, p_both=0.05,
        train_parts=("unet", "adapter"), kl_weight=1e-4, l1_weight=1.0, s_image=2.0,
        s_pose=4.0))
    c.train = base.train
    c.train.update(dict(batch_size=8, num_steps=1000, lr=5e-5, warmup_steps=0, ema_decay=0.0,
                        log_every=50, checkpoint_every=1000, sample_every=0,
                        async_checkpoints=False, keep_checkpoints=1))
    c.sample = base.sample
    c.sample.update(dict(sampler="ddim", num_samples=4, num_steps=25))
    c.evals, c.apps = base.evals, base.apps
    c.mesh = base.mesh
    c.sharding = base.sharding
    return c
