"""DreamPose stage 1: finetune on (subject image, pose window, target frame) triples.

    # Stable Diffusion 1.x base (diffusers folder; CLIP ViT-L/14 image encoder with
    # projection in <sd>/image_encoder or clip=PATH), real pose videos:
    python -m vdiff.main --config=configs/dreampose_dataset.py:sd=PATH,data=DIR \
        --workdir=W_DATASET
    # tiny demo model on synthetic people (base VAE from a dreampose_vae.py:pretrain run):
    python -m vdiff.main --config=configs/dreampose_dataset.py:base_vae=W_BASE \
        --workdir=W_DATASET

data=DIR: DIR/<video>/frames/*.png + DIR/<video>/poses/ (OpenPose JSON or DensePose IUV).
Arguments: sd, clip, data, base_vae, resolution, steps, batch, lr, scaling_factor, bf16,
remat, runlocal.
"""

from vdiff import config_lib
from vdiff.methods.dreampose.config import dreampose_defaults


def get_config(arg=None):
    a = config_lib.parse_arg(arg, sd="", clip="", data="", base_vae="", resolution=0,
                             steps=0, batch=0, lr=0.0, scaling_factor=1.0, bf16=False,
                             remat=False, runlocal=False, micro=False)
    c = dreampose_defaults("dataset")
    c.model.sd, c.model.clip, c.model.scaling_factor = a.sd, a.clip, a.scaling_factor
    c.dreampose.base_vae = a.base_vae
    if a.data:
        c.data.name, c.data.source_dir = "pose_videos", a.data
    if a.sd:  # DreamPose's settings: 512 × 512, lr 5e-6
        c.data.resolution, c.train.batch_size, c.train.lr = 512, 8, 5e-6
        c.train.num_steps, c.train.ema_decay = 20_000, 0.0
    else:  # the tiny synthetic model learns from scratch
        c.train.batch_size, c.train.num_steps, c.train.lr = 16, 4000, 3e-4
        c.train.lr_schedule, c.train.warmup_steps = "cosine", 100
        c.train.ema_decay = 0.999
    if a.bf16:  # also on CPU; "auto" (the default) is bf16 on GPU/TPU already
        c.model.dtype = "bfloat16"
    c.model.remat = a.remat
    c.mesh.shape = (1, 1, 1) if not a.sd else (-1, 1, 1)
    if a.micro:  # the CPU tests' model
        c.model.size, c.data.resolution = "micro", 16
    if a.runlocal:
        c.data.num_subjects, c.data.num_frames = 2, 6
        c.train.batch_size, c.train.num_steps, c.train.log_every = 2, 2, 1
        c.train.ema_decay = 0.0
    c.data.resolution = a.resolution or c.data.resolution
    c.train.num_steps = a.steps or c.train.num_steps
    c.train.batch_size = a.batch or c.train.batch_size
    c.train.lr = a.lr or c.train.lr
    return c
