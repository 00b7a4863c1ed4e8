"""PVDM stage 2 on UCF-101 at the paper's setting, over a configs/pvdm_ae_ucf.py run.

    python -m vdiff.main --config=configs/pvdm_ldm_ucf.py:ae=workdirs/pvdm_ae_ucf \
        --workdir=workdirs/pvdm_ldm_ucf --config.data.source_dir=/data/UCF-101

Triplane UNet: 256 channels, multipliers (1, 2, 4, 4), 2 res blocks, joint attention at
latent downsampling factors 1/2/4; AdamW lr 1e-4, EMA 0.9999; ε-prediction on the official
schedule (β linear in √β from 0.0015 to 0.0195; `--config.diffusion.schedule=linear_beta`
gives DDPM's linear β instead). Examples are 32 frames = two 16-frame clips (p(x²|x¹) with probability ½), so
a sample is a 32-frame video and `--mode=sample --application=extend --num_frames=128`
gives a long one.
"""

import ml_collections

from vdiff import config_lib
from vdiff.methods.pvdm.config import pvdm_defaults


def get_config(arg=None):
    a = config_lib.parse_arg(arg, runlocal=False, steps=0, ae="", batch=32)
    c = pvdm_defaults("pvdm_ldm")
    c.data.name, c.data.channels, c.data.resolution = "ucf101", 3, 256
    c.pvdm.update(dict(autoencoder_workdir=a.ae, clip_frames=16, cond_prob=0.5))
    c.data.num_frames = 32
    c.train.update(dict(batch_size=a.batch, num_steps=400_000, lr=1e-4, weight_decay=0.01,
                        ema_decay=0.9999, log_every=100, checkpoint_every=5000,
                        sample_every=10_000, eval_every=50_000))
    c.sample.num_samples = 8
    c.evals.fvd = ml_collections.ConfigDict(dict(num_videos=2048, num_steps=100))
    if a.runlocal:
        c.data.builder_config = "res64_split1"
        c.data.resolution = 32
        c.pvdm.clip_frames = 4
        c.data.num_frames = 8
        c.model.update(dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                            attn_levels=(0,), head_dim=8, dtype="float32", attention_impl="xla"))
        c.train.update(dict(batch_size=8, num_steps=4, log_every=2, checkpoint_every=4,
                            sample_every=0))
        c.sample.num_samples, c.sample.num_steps = 2, 4
        c.evals = ml_collections.ConfigDict()
    if a.steps:
        c.train.num_steps = a.steps
    return c
