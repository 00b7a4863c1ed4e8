"""VDM on UCF-101 at 16×64×64 — the paper's setting (Ho et al. 2022, appendix).

Base channels 256, multipliers (1,2,4,8), 2 res blocks per level, attention at
32/16/8 px, head dim 64, dropout 0.1, Adam β=(0.9, 0.99), lr 3e-4, batch 128,
EMA 0.9999, 8 extra independent images per video (joint training), cosine
log-SNR clipped to [−20, 20], v-prediction.

UCF-101 is read from a local copy, prepared once (see docs/methods/vdm.md):

    python -m vdiff.data.prepare ucf101 --manual_dir=/data/UCF101 --resolution=64

or prepared on first use with `--config.data.source_dir=/data/UCF101`. Clips of
16 frames at a random start with stride 1 (25 fps), random horizontal flips.
`runlocal` shrinks the model and batch for a CPU smoke test.
"""

import ml_collections

from vdiff import config_lib


def get_config(arg=None):
    a = config_lib.parse_arg(arg, runlocal=False)
    c = config_lib.vdm_defaults()
    c.data.name = "ucf101"
    c.data.channels = 3
    c.data.num_frames, c.data.resolution = 16, 64
    c.data.num_images_per_video = 8
    c.data.builder_config = ""  # res{resolution}_split{ucf_split}
    c.data.ucf_split = 1
    c.data.temporal_crop = "random"
    c.data.random_flip = True
    c.data.worker_count = 8  # decoding JPEG clips for ~200 clips/s on one GPU (docs/performance.md)

    c.model.base_channels = 256
    c.model.channel_mults = (1, 2, 4, 8)
    c.model.num_res_blocks = 2
    c.model.attn_resolutions = (32, 16, 8)
    c.model.temporal_attn_resolutions = (32, 16, 8)
    c.model.head_dim = 64
    c.model.dropout = 0.1
    c.model.num_classes = 0  # the paper reports unconditional UCF-101

    c.diffusion.schedule = "cosine"
    c.diffusion.logsnr_min, c.diffusion.logsnr_max = -20.0, 20.0
    c.diffusion.parameterization = "v"

    c.train.batch_size = 128
    c.train.lr, c.train.b1, c.train.b2 = 3e-4, 0.9, 0.99
    c.train.ema_decay = 0.9999
    c.train.num_steps = 200_000
    c.train.eval_every = 20_000
    c.evals.fvd = ml_collections.ConfigDict(dict(num_videos=2048, num_steps=256))

    if a.runlocal:
        c.model.base_channels = 16
        c.model.channel_mults = (1, 2)
        c.model.num_res_blocks = 1
        c.model.attn_resolutions = c.model.temporal_attn_resolutions = (8,)
        c.model.head_dim = 8
        c.data.num_frames, c.data.num_images_per_video = 4, 2
        c.data.builder_config = f"res64_split{c.data.ucf_split}"
        c.data.resolution = 16  # pooled 4× from the 64-px copy
        c.data.worker_count = 0
        c.evals = ml_collections.ConfigDict()
        c.train.batch_size, c.train.num_steps, c.train.log_every = 8, 20, 5
    return c
