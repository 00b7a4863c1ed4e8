"""VDM on moving digits — the embedded default that runs anywhere, CPU included.

Data: 1–2 of scikit-learn's bundled handwritten digits bouncing in 64×64 frames,
built on first use (no download). Class-conditional on the first digit's label.

  python -m vdiff.main --config=configs/vdm_digits.py --workdir=/tmp/vdm_digits
  python -m vdiff.main --config=configs/vdm_digits.py:full --workdir=...   # 16×64×64, GPU-sized
  python -m vdiff.main --config=configs/vdm_digits.py:full,res=32 --workdir=...   # 16×32×32

`full` is class-conditional on which digits a video shows (110 digit-set classes), with
classifier-free guidance w=2 for samples and evaluators; `joint=K` sets the joint images
per video (default 4), `param=eps` trains ε-prediction instead of v.

Default (no arg) is sized to finish on a 2-core CPU in under 5 minutes: 8×32×32
videos + 1 joint image, batch 4, a 0.4M-parameter UNet, 500 steps. Expect blurry
moving blobs after that little training, not crisp digits; `:full` on a GPU is the
setting that learns the data.
"""

import ml_collections

from vdiff import config_lib
from vdiff.data import moving_digits


def get_config(arg=None):
    a = config_lib.parse_arg(arg, full=False, runlocal=False, steps=0, res=0, joint=-1,
                              param="v")
    c = config_lib.vdm_defaults()
    c.data.name = "moving_digits"
    c.data.num_images_per_video = 2
    c.model.num_classes = 10
    c.model.dropout = 0.0
    c.train.ema_decay = 0.999

    if a.full:  # accelerators: 16 frames, class-conditional on which digits a video shows
        res = a.res or 64
        c.data.num_frames, c.data.resolution = 16, res
        c.data.num_images_per_video = 4 if a.joint < 0 else a.joint
        # 110 classes, one per digit set {a} or {a, b}; samples and the digit score ask for
        # each digit alone (class 11·d + 10), so digit_accuracy says how readable they are
        c.data.label_from = "digit_set"
        c.model.num_classes = moving_digits.NUM_DIGIT_SET_CLASSES
        c.sample.labels = tuple(moving_digits.one_digit_class(d) for d in range(10))
        c.sample.guidance_scale = 2.0
        c.model.base_channels = 64
        if res == 64:  # the paper's UNet shape (73M parameters)
            c.model.attn_resolutions = c.model.temporal_attn_resolutions = (32, 16, 8)
        else:  # 32 px: three levels, attention below full resolution (~20M parameters)
            c.model.channel_mults = (1, 2, 4)
            c.model.attn_resolutions = (16, 8)
            c.model.temporal_attn_resolutions = (32, 16, 8)
        c.train.batch_size, c.train.num_steps = (32, 50_000) if res == 64 else (64, 20_000)
        c.train.lr, c.train.warmup_steps = 3e-4, 500
        c.train.log_every, c.train.checkpoint_every, c.train.sample_every = 100, 2000, 5000
        c.sample.num_samples, c.sample.num_steps = 20, 128
        # one sampling batch shape for all three sampling evaluators: one compile
        guided = dict(num_steps=128, guidance_scale=2.0, batch_size=128)
        # FVD against every held-out clip: the digits test split holds 200
        c.evals.fvd = ml_collections.ConfigDict(dict(num_videos=200, **guided))
        c.evals.digit_score = ml_collections.ConfigDict(dict(num_videos=100, **guided))
        c.evals.heldout_loss = ml_collections.ConfigDict(dict(num_batches=4, batch_size=32))
        # memorisation: fresh clips of training digits from the `large` split's extra videos
        c.evals.nearest_train = ml_collections.ConfigDict(dict(
            num_videos=64, num_fresh=256, fresh_builder_config="large",
            fresh_split="train[2000:]", **guided))
        c.train.eval_every = 10_000
    else:  # CPU demo: a few minutes on 2 cores (measured in docs/results.md)
        c.data.num_frames, c.data.resolution = 8, 32
        c.data.num_images_per_video = 1
        c.model.base_channels = 16
        c.model.channel_mults = (1, 2, 2)
        c.model.num_res_blocks = 1
        c.model.attn_resolutions = (8,)
        c.model.temporal_attn_resolutions = (16, 8)
        c.model.head_dim = 16
        c.train.batch_size, c.train.num_steps = 4, 500
        c.train.lr, c.train.warmup_steps = 1e-3, 50
        c.train.log_every, c.train.checkpoint_every, c.train.sample_every = 25, 100, 0
        c.sample.num_samples, c.sample.num_steps = 4, 32
        # FVD of 32 samples vs 32 held-out clips once, at the end (noisy with so few clips,
        # but it shows the number moving between runs; ≈1 min of I3D on 2 cores).
        c.evals.fvd = ml_collections.ConfigDict(dict(num_videos=32, num_steps=32))

    if a.runlocal:  # smallest thing that exercises every code path (tests, smoke runs)
        c.data.builder_config = "tiny"
        c.data.num_frames, c.data.resolution = 4, 16
        c.data.num_images_per_video = 1
        c.model.base_channels = 16
        c.model.channel_mults = (1, 2)
        c.model.num_res_blocks = 1
        c.model.attn_resolutions = (8,)
        c.model.temporal_attn_resolutions = (16, 8)
        c.model.head_dim = 8
        c.train.batch_size, c.train.num_steps = 8, 20
        c.train.warmup_steps = 5
        c.train.log_every, c.train.checkpoint_every, c.train.sample_every = 5, 10, 0
        c.sample.num_samples, c.sample.num_steps = 2, 4
        c.evals = ml_collections.ConfigDict()  # I3D is too slow for smoke runs
    if a.steps:
        c.train.num_steps = a.steps
    if a.param != "v":  # 'eps': ε-prediction with the ε loss (the v-vs-ε comparison)
        c.diffusion.parameterization = c.diffusion.loss_space = a.param
    return c
