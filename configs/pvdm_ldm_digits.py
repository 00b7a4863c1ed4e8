"""PVDM stage 2 on moving digits: a triplane latent UNet over a trained autoencoder.

    python -m vdiff.main --config=configs/pvdm_ldm_digits.py:ae=workdirs/pvdm_ae \
        --workdir=workdirs/pvdm_ldm
    python -m vdiff.main --config=configs/pvdm_ldm_digits.py:ae=workdirs/pvdm_ae \
        --workdir=workdirs/pvdm_ldm --mode=sample --num_frames=64     # a long video

Examples are 16 frames = two 8-frame clips: with probability ½ the model sees the first
clip's latents (p(x² | x¹)), otherwise zeros (p(x)). The training set's latents are
computed once at the start (`pvdm.cache_latents`). Samples and FVD use two clips (the
second conditioned on the first). `ae=` is the pvdm_ae_digits.py workdir; `digits=large`
trains on 15,000 moving-digits videos instead of 2,000 (same test videos), `digits=static`
on the default's digits at rest (with an autoencoder trained on them); `fvd=False`
drops the FVD evaluator (it needs the 49 MB I3D weights and cannot see broken strokes here),
`evals=none` every evaluator (train now, evaluate later with `--mode=eval`), and
`evals=digit_score+heldout_loss` keeps those only.

`classes=True` makes the latent model class-conditional on which digits a video shows
(`data.label_from='digit_set'`: 110 classes, one per set {a} or {a, b}), trained with 10 %
null labels for classifier-free guidance of weight `guidance=w`. Its samples and the digit
score's samples are asked for each digit alone, so `digit_accuracy` (how often the digit
classifier reads the asked digit) measures how recognisable they are; sample from it with
`--mode=sample --label=C --guidance_scale=W` (C = 11·d + 10: digit d alone).
"""

import ml_collections

from vdiff import config_lib
from vdiff.data import moving_digits
from vdiff.methods.pvdm.config import pvdm_defaults


def get_config(arg=None):
    a = config_lib.parse_arg(arg, runlocal=False, steps=0, ae="", frames=8, digits="default",
                              fvd=True, classes=False, guidance=2.0,
                              evals="all")
    c = pvdm_defaults("pvdm_ldm")
    c.data.name, c.data.channels = "moving_digits", 1
    c.data.resolution = 32
    c.data.random_flip, c.data.temporal_crop = False, "random"
    c.data.builder_config = a.digits  # 'large': 15,000 training videos instead of 2,000
    c.pvdm.update(dict(autoencoder_workdir=a.ae, clip_frames=a.frames, cond_prob=0.5))
    c.data.num_frames = 2 * a.frames
    c.model.update(dict(base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=2,
                        attn_levels=(0, 1, 2), head_dim=32))
    c.train.update(dict(batch_size=32, num_steps=6000, lr=2e-4, warmup_steps=200,
                        ema_decay=0.999, log_every=100, checkpoint_every=1000,
                        sample_every=3000, eval_every=2000))
    c.sample.num_samples, c.sample.num_steps = 8, 100
    if a.classes:
        c.data.label_from = "digit_set"
        c.model.num_classes = moving_digits.NUM_DIGIT_SET_CLASSES
        c.diffusion.cond_drop_prob = 0.1
        c.pvdm.sample_labels = tuple(moving_digits.one_digit_class(d) for d in range(10))
        c.sample.guidance_scale = a.guidance
    if a.fvd:
        c.evals.fvd = ml_collections.ConfigDict(dict(num_videos=128, num_steps=100))
    # FVD cannot see broken strokes at 32×32; the digit classifier can (docs/results.md, PVDM)
    c.evals.digit_score = ml_collections.ConfigDict(dict(num_videos=64, num_steps=100,
                                                         guidance_scale=c.sample.guidance_scale))
    # 2,000 fixed training videos: the train/held-out loss gap shows the model memorising
    c.evals.heldout_loss = ml_collections.ConfigDict(dict(num_batches=4, batch_size=64))
    # ... and how close its samples come to them. Fresh clips of the training distribution:
    # the `large` split's videos past the default 2,000 (same digit images); `large` itself
    # has none left, so it compares with the test videos (other digit images: further away)
    fresh = (dict(fresh_builder_config="large", fresh_split="train[2000:]")
             if a.digits == "default" else {})
    c.evals.nearest_train = ml_collections.ConfigDict(dict(num_videos=64, num_fresh=256,
                                                           **fresh))
    # cheap evaluators, so `--mode=eval` (benchmarks/studies/pvdm_*.sh) runs on CPU too
    if a.runlocal:
        c.evals.digit_score.update(num_videos=2, num_steps=4)
        c.evals.heldout_loss.update(num_batches=1, batch_size=4)
        c.evals.nearest_train = ml_collections.ConfigDict(dict(num_videos=2, num_fresh=4,
                                                               num_steps=4))
        if "fvd" in c.evals:  # no I3D-sized run on CPU
            del c.evals["fvd"]
    evals = a.evals
    if a.runlocal and evals == "all":  # by default only the two that train no classifier
        evals = "heldout_loss+nearest_train"
    if evals == "none":  # train without evaluators (evaluate later with --mode=eval)
        c.evals = ml_collections.ConfigDict()
    elif evals != "all":  # a subset, e.g. evals=digit_score+heldout_loss
        keep = evals.split("+")
        unknown = sorted(set(keep) - set(c.evals))
        if unknown:
            raise ValueError(f"evals={evals}: unknown evaluator(s) {unknown}; this config "
                             f"has {sorted(c.evals)}")
        c.evals = ml_collections.ConfigDict({k: c.evals[k] for k in keep})
    if a.runlocal:
        c.data.builder_config = "tiny"
        c.pvdm.clip_frames = min(a.frames, 4)
        c.data.num_frames = 2 * c.pvdm.clip_frames
        c.model.update(dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                            attn_levels=(0,), head_dim=8))
        c.train.update(dict(batch_size=8, num_steps=4, warmup_steps=0, log_every=2,
                            checkpoint_every=4, sample_every=0))
        c.sample.num_samples, c.sample.num_steps = 2, 4
    # Each example is one whole stored video (16 frames; 8 in `tiny`) with no flips, so its
    # latents never change: encode the training set once instead of every step (3.3x fewer
    # FLOPs per step, benchmarks/speed/pvdm_latent_cache.py). Other clip lengths encode per batch.
    c.pvdm.cache_latents = c.data.num_frames == (8 if a.runlocal else 16)
    if a.steps:
        c.train.num_steps = a.steps
    return c
