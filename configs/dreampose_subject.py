"""DreamPose stage 2: finetune on photos of one subject (random crops), from stage 1.

    python -m vdiff.main \
        --config=configs/dreampose_subject.py:init_from=W_DATASET,subject_dir=DIR \
        --workdir=W_SUBJECT

subject_dir=DIR: DIR/frames/*.png (the photos) + DIR/poses/ (their poses). Without it the
synthetic held-out subject (data.num_subjects) is used. Then finetune the VAE decoder
(configs/dreampose_vae.py:init_from=W_SUBJECT) and animate with vdiff.dreampose_cli.
Arguments: init_from, subject_dir, sd, steps, batch, lr, scaling_factor, bf16, remat,
runlocal.
"""

from vdiff import config_lib
from vdiff.methods.dreampose.config import dreampose_defaults


def get_config(arg=None):
    a = config_lib.parse_arg(arg, init_from="", subject_dir="", sd="", steps=0, batch=0,
                             lr=0.0, scaling_factor=1.0, bf16=False, remat=False,
                             runlocal=False, micro=False)
    c = dreampose_defaults("subject")
    c.dreampose.init_from = a.init_from
    c.model.sd, c.model.scaling_factor = a.sd, a.scaling_factor
    if a.subject_dir:
        c.data.name, c.data.subject_dir = "pose_videos", a.subject_dir
    if a.sd:
        c.data.resolution, c.train.batch_size, c.train.lr = 512, 1, 1e-5
        c.train.num_steps = 500
    else:
        c.train.batch_size, c.train.num_steps, c.train.lr = 8, 300, 1e-4
    c.train.ema_decay = 0.0
    if a.bf16:  # also on CPU; "auto" (the default) is bf16 on GPU/TPU already
        c.model.dtype = "bfloat16"
    c.model.remat = a.remat
    c.mesh.shape = (1, 1, 1)
    if a.micro:  # the CPU tests' model
        c.model.size, c.data.resolution = "micro", 16
    if a.runlocal:
        c.data.num_subjects, c.data.num_frames, c.data.num_subject_photos = 2, 6, 2
        c.train.batch_size, c.train.num_steps, c.train.log_every = 2, 2, 1
    c.train.num_steps = a.steps or c.train.num_steps
    c.train.batch_size = a.batch or c.train.batch_size
    c.train.lr = a.lr or c.train.lr
    return c
