"""DreamPose VAE stages.

    # DreamPose's decoder finetune on the subject photos (after the subject stage):
    python -m vdiff.main --config=configs/dreampose_vae.py:init_from=W_SUBJECT \
        --workdir=W_VAE
    # the synthetic demo's base autoencoder, trained from scratch on synthetic frames:
    python -m vdiff.main --config=configs/dreampose_vae.py:pretrain --workdir=W_BASE

Decoder finetune: only vae/decoder + post_quant_conv train (L2 + L1 on random crops of
the subject photos); the checkpoint holds the complete final model for the CLI.
Arguments: init_from, pretrain, sd, subject_dir, steps, batch, lr, runlocal.
"""

from vdiff import config_lib
from vdiff.methods.dreampose.config import dreampose_defaults


def get_config(arg=None):
    a = config_lib.parse_arg(arg, init_from="", pretrain=False, sd="", subject_dir="",
                             steps=0, batch=0, lr=0.0, scaling_factor=1.0, runlocal=False, micro=False)
    c = dreampose_defaults("vae_pretrain" if a.pretrain else "vae_decoder")
    c.dreampose.init_from = a.init_from
    c.model.sd, c.model.scaling_factor = a.sd, a.scaling_factor
    if a.subject_dir:
        c.data.name, c.data.subject_dir = "pose_videos", a.subject_dir
    if a.pretrain:
        c.train.batch_size, c.train.num_steps, c.train.lr = 16, 3000, 1e-3
        c.train.lr_schedule, c.train.warmup_steps = "cosine", 100
    else:
        c.train.batch_size, c.train.num_steps, c.train.lr = 4, 500, 5e-5
    c.mesh.shape = (1, 1, 1)
    if a.micro:  # the CPU tests' model
        c.model.size, c.data.resolution = "micro", 16
    if a.runlocal:
        c.data.num_subjects, c.data.num_frames = 2, 6
        c.train.batch_size, c.train.num_steps, c.train.log_every = 2, 2, 1
    c.train.num_steps = a.steps or c.train.num_steps
    c.train.batch_size = a.batch or c.train.batch_size
    c.train.lr = a.lr or c.train.lr
    return c
