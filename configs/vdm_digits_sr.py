"""Cascaded 2× spatial super-resolution on moving digits (VDM's cascade stage).

The network sees the video average-pooled by 2 and upsampled back, concatenated to
its noisy input, and learns the full-resolution frames. Sample with

  python -m vdiff.main --mode=sample --application=super_resolve \
      --config=configs/vdm_digits_sr.py --workdir=DIR [--input_video=low_res.mp4]

(without --input_video the held-out split is downsampled and super-resolved, and PSNR
against the originals is reported). `runlocal` shrinks it for tests.
"""

from vdiff import config_lib


def get_config(arg=None):
    a = config_lib.parse_arg(arg, runlocal=False, steps=0)
    c = config_lib.vdm_defaults()
    c.method = "vdm_sr"
    c.sr.factor = 2
    c.data.num_frames, c.data.resolution, c.data.num_images_per_video = 8, 32, 1
    c.model.num_classes = 0
    c.model.base_channels = 16
    c.model.channel_mults = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = (8,)
    c.model.temporal_attn_resolutions = (8,)
    c.model.head_dim = 16
    c.train.batch_size, c.train.num_steps = 4, 500
    c.train.lr, c.train.warmup_steps, c.train.ema_decay = 1e-3, 50, 0.999
    c.train.log_every, c.train.checkpoint_every, c.train.sample_every = 25, 100, 0
    c.sample.num_samples, c.sample.num_steps = 4, 32
    if a.runlocal:
        c.data.builder_config = "tiny"
        c.data.num_frames, c.data.resolution = 4, 16
        c.model.channel_mults = (1, 2)
        c.model.temporal_attn_resolutions = (8,)
        c.model.head_dim = 8
        c.train.batch_size, c.train.num_steps, c.train.warmup_steps = 8, 20, 5
        c.train.log_every, c.train.checkpoint_every = 5, 10
        c.sample.num_samples, c.sample.num_steps = 2, 4
    if a.steps:
        c.train.num_steps = a.steps
    return c
