"""PVDM stage 1 on UCF-101 at the paper's setting: 16×256×256 clips, patch 8, 4 latent channels.

    python -m vdiff.main --config=configs/pvdm_ae_ucf.py --workdir=workdirs/pvdm_ae_ucf \
        --config.data.source_dir=/data/UCF-101

Planes 32×32 / 16×32 / 16×32 × 4 channels. Encoder and decoder are 8-block divided
space-time transformers of width 384; bf16 compute with float32 params and rematerialised
blocks so batch ≥ 2 fits an 80 GB GPU (benchmarks/speed/pvdm_efficiency.py). L1 + LPIPS, the
adversarial stage from step 50k. Data: as configs/vdm_ucf.py (a local UCF-101, prepared
on first use). `:runlocal` is a CPU smoke run on a small prepared resolution.
"""

import ml_collections

from vdiff import config_lib
from vdiff.methods.pvdm.config import pvdm_defaults


def get_config(arg=None):
    a = config_lib.parse_arg(arg, runlocal=False, steps=0, batch=8)
    c = pvdm_defaults("pvdm_ae")
    c.data.name, c.data.channels, c.data.num_frames, c.data.resolution = "ucf101", 3, 16, 256
    c.model.remat = True
    c.pvdm.update(dict(gan_start_step=50_000, gan_weight=0.1, gan_weight_mode="adaptive"))
    c.train.update(dict(batch_size=a.batch, num_steps=400_000, lr=1e-4, log_every=100,
                        checkpoint_every=5000, sample_every=10_000, eval_every=20_000))
    c.evals.pvdm_reconstruction = ml_collections.ConfigDict(dict(num_videos=256))
    if a.runlocal:
        c.data.builder_config = "res64_split1"
        c.data.num_frames, c.data.resolution = 4, 32
        c.model.update(dict(patch_size=8, width=32, encoder_depth=1, decoder_depth=1,
                            head_dim=16, remat=False, dtype="float32", attention_impl="xla"))
        c.pvdm.update(dict(gan_start_step=2, disc_channels=8, disc_layers=1, lpips_frames=2))
        c.train.update(dict(batch_size=8, num_steps=4, log_every=2, checkpoint_every=4,
                            sample_every=0))
        c.evals.pvdm_reconstruction = ml_collections.ConfigDict(dict(num_videos=4))
    if a.steps:
        c.train.num_steps = a.steps
    return c
