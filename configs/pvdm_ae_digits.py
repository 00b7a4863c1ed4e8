"""PVDM stage 1 on moving digits: the projected (triplane) video autoencoder.

    python -m vdiff.main --config=configs/pvdm_ae_digits.py --workdir=workdirs/pvdm_ae
    python -m vdiff.main --config=configs/pvdm_ae_digits.py --workdir=... --mode=eval

8-frame 32×32 clips (the 64-px digits pooled 2×), patch 4 → planes 8×8 / 8×8 / 8×8 with 4
channels (a 16× smaller latent than the clip). L1 + LPIPS, then the adversarial stage
(2D + 3D patch discriminators, hinge loss, adaptive weight) from step 3000. Sized for one
GPU in minutes; `:runlocal` is a CPU smoke run. Then train stage 2 with
configs/pvdm_ldm_digits.py. `:digits=static` trains on the same digits at rest (give the
latent config the same `digits=`). `patch=2` gives 16×16 / 8×16 / 8×16 planes: a 12-px digit
then spans 6 latent cells instead of 3 (4× the tokens); `latent_channels=C` sets C.
"""

import ml_collections

from vdiff import config_lib
from vdiff.methods.pvdm.config import pvdm_defaults


def get_config(arg=None):
    a = config_lib.parse_arg(arg, runlocal=False, steps=0, frames=8, digits="default",
                              patch=4, latent_channels=4)
    c = pvdm_defaults("pvdm_ae")
    c.data.name, c.data.channels = "moving_digits", 1
    c.data.num_frames, c.data.resolution = a.frames, 32
    c.data.random_flip, c.data.temporal_crop = False, "random"
    c.data.builder_config = a.digits  # 'static': the same digits at rest (docs/methods/pvdm.md)
    c.model.update(dict(patch_size=a.patch, latent_channels=a.latent_channels, width=128,
                        encoder_depth=4, decoder_depth=4, projection_depth=1, head_dim=32))
    c.pvdm.update(dict(gan_start_step=3000, gan_weight=0.1, disc_channels=32, disc_layers=2))
    c.train.update(dict(batch_size=16, num_steps=5000, lr=2e-4, warmup_steps=200,
                        log_every=100, checkpoint_every=1000, sample_every=2500))
    c.sample.num_samples = 8
    c.evals.pvdm_reconstruction = ml_collections.ConfigDict(dict(num_videos=64))
    if a.runlocal:
        c.data.builder_config = "tiny"
        c.data.num_frames = min(a.frames, 4)
        c.model.update(dict(patch_size=8, width=32, encoder_depth=1, decoder_depth=1,
                            head_dim=16))
        c.pvdm.update(dict(gan_start_step=2, disc_channels=8, disc_layers=1, lpips_frames=2))
        c.train.update(dict(batch_size=8, num_steps=4, warmup_steps=0, log_every=2,
                            checkpoint_every=4, sample_every=0))
        c.sample.num_samples = 2
        c.evals.pvdm_reconstruction = ml_collections.ConfigDict(dict(num_videos=4))
    if a.steps:
        c.train.num_steps = a.steps
    return c
