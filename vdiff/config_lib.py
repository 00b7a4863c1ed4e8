"""Config helpers: the full key set for VDM-style runs and `get_config(arg)` parsing.

Config files in `configs/` start from `vdm_defaults()` so every key exists (and a
typo in an override fails loudly under `lock_config`), then set what the
experiment needs. The `arg` string after the colon, e.g.
`configs/vdm_ucf.py:runlocal,batch=8`, is parsed by `parse_arg`.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections

from vdiff.errors import ConfigError


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses 'flag,key=value,...' against typed defaults; unknown keys raise ConfigError.

    A bare word sets a bool default to True (`runlocal`). Values are cast to the
    type of their default.
    """
    out = dict(defaults)
    for item in filter(None, (s.strip() for s in (arg or "").split(","))):
        key, _, value = item.partition("=")
        if key not in defaults:
            raise ConfigError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
        default = defaults[key]
        if not _:
            if not isinstance(default, bool):
                raise ConfigError(f"config argument {key!r} needs a value ({key}=...)")
            out[key] = True
        elif isinstance(default, bool):
            out[key] = value.lower() in ("1", "true", "yes", "y")
        else:
            out[key] = type(default)(value)
    return ml_collections.ConfigDict(out)


def vdm_defaults() -> ml_collections.ConfigDict:
    """Every key a VDM run reads, with conservative defaults."""
    c = ml_collections.ConfigDict()
    c.method = "vdm"
    c.seed = 0

    c.data = ml_collections.ConfigDict(dict(
        name="moving_digits",  # moving_digits | ucf101 | video_folder | single_video
        builder_config="default",  # tfds config; '' → derived (ucf101: res{R}_split{S})
        data_dir="",  # '' → $VDIFF_DATA_DIR or ~/.cache/vdiff/datasets
        source_dir="",  # raw source: UCF-101 root, folder of videos, or the single video
        build_if_missing=True,  # prepare on first use (ucf101/video_folder need source_dir)
        ucf_split=1,  # official UCF-101 train/test split 1, 2 or 3
        folder_name="",  # video_folder: dataset name ('' → basename of source_dir)
        labels_from_subfolders=False,  # video_folder: class = first sub-folder
        # batch["label"]: 'label' (the dataset's class; moving digits: the first digit) or
        # 'digit_set' (moving digits: which digits the video shows, one of 110 classes,
        # vdiff.data.moving_digits.digit_set_class)
        label_from="label",
        min_frames=16,  # video_folder preparation: shorter videos are skipped
        max_frames=0,  # single_video: keep the first N frames (0 = all) from first_frame
        first_frame=0,  # single_video: frames [first_frame, end_frame) of the file
        end_frame=0,  # (0 = to its end); frame 0 of the run is first_frame
        channels=1,
        num_frames=16,  # frames per clip (single_video: 0 = the whole clip)
        frame_stride=1,  # clip frames this far apart (clamped for short videos)
        resolution=64,
        temporal_crop="first",  # clip start: 'first' or 'random'
        crop_fraction=1.0,  # < 1: random spatial crop of this fraction (SinFusion)
        random_flip=False,  # random horizontal flip
        num_images_per_video=0,  # K images packed after each video (joint training)
        # Where the K images come from: 'batch' (frames of the other videos of the host
        # batch, cheap) or 'dataset' (K random videos: K extra record reads per clip).
        joint_images_from="batch",
        read_threads=2,  # grain reader threads per process (prefetching batches)
        worker_count=0,  # > 0: decode/augment in this many worker processes
    ))

    c.model = ml_collections.ConfigDict(dict(
        base_channels=64,
        channel_mults=(1, 2, 4, 8),
        num_res_blocks=2,
        attn_resolutions=(32, 16, 8),
        temporal_attn_resolutions=(32, 16, 8),
        head_dim=64,
        dropout=0.0,
        num_classes=0,  # 0 = unconditional; else labels in [0, n) and n = null class
        max_relative_distance=32,
        # 'auto' (resolved per backend and logged at start-up, vdiff.runtime: GPU bf16 with
        # cuDNN spatial attention, TPU bf16, CPU float32 with XLA), or explicit values:
        spatial_attention_impl="auto",  # 'xla' or 'cudnn' (bf16 on GPU)
        # 'xla', 'cudnn', or 'einsum' (attention across frames in place, no transposes)
        temporal_attention_impl="auto",
        dtype="auto",  # compute dtype: 'float32', 'bfloat16', 'float16'; params stay float32
        remat="none",  # per block: 'none', 'dots' (keep conv/matmul outputs) or 'full'
        # GroupNorm → FiLM → SiLU as one Pallas (Triton) kernel, vdiff.nn.fused_norm: 'off',
        # 'on' (GPU; pure JAX elsewhere) or 'auto'. Off until the kernel has been measured on
        # a GPU (benchmarks/speed/fused_norm.py); then 'auto' turns it on on GPUs. Same parameters.
        fused_norm="off",
    ))

    c.diffusion = ml_collections.ConfigDict(dict(
        schedule="cosine",
        logsnr_min=-20.0,
        logsnr_max=20.0,
        parameterization="v",
        loss_space="v",
        weighting="none",
        cond_drop_prob=0.1,
    ))

    c.train = ml_collections.ConfigDict(dict(
        batch_size=128,  # global, over all processes
        num_steps=200_000,
        lr=3e-4,
        lr_schedule="constant",  # 'constant', 'cosine' or 'step'
        warmup_steps=1000,
        final_lr_fraction=0.0,  # cosine: final lr / lr
        lr_decay_every=0,  # step: multiply the lr by lr_decay_rate every N steps
        lr_decay_rate=0.5,
        b1=0.9,
        b2=0.99,
        adam_eps=1e-8,
        weight_decay=0.0,
        grad_clip=1.0,
        ema_decay=0.9999,
        log_every=50,
        checkpoint_every=1000,
        keep_checkpoints=3,
        async_checkpoints=True,
        sample_every=5000,  # 0 disables periodic samples (a final one is still written)
        eval_every=0,  # steps between evaluator runs (0: at the end only, if any evals)
        # Wall-clock budget of this invocation in seconds (0: none): once passed, the run
        # checkpoints and stops like on SIGTERM, and the same command resumes it.
        max_train_seconds=0.0,
        # Steps with a non-finite loss or gradient are skipped (the state is unchanged);
        # the run stops with NonFiniteLossError once more than this many were skipped.
        max_nonfinite_steps=0,
        # PRNG behind dropout and noise draws: 'threefry2x32' (JAX's default; the same
        # numbers on any mesh), or 'rbg' / 'unsafe_rbg' (XLA's RngBitGenerator: cheaper
        # random bits on GPU/TPU, but the values depend on the backend and sharding).
        prng_impl="threefry2x32",
    ))

    # One sampling concept for every method: periodic samples, `--mode=sample` and the
    # sampling evaluators start from these (a flag given on the command line wins, and
    # `config.apps.<application>` overrides them for one application).
    c.sample = ml_collections.ConfigDict(dict(
        sampler="ancestral",  # ancestral | ddim | pc | dpmpp_2m
        num_samples=8,
        num_steps=128,
        gamma=0.3,
        guidance_scale=0.0,
        fps=8,
        # classes the periodic samples and the sampling evaluators cycle through
        # (class-conditional models; empty: 0 … num_classes − 1)
        labels=(),
    ))

    c.sr = ml_collections.ConfigDict(dict(  # method 'vdm_sr' (cascaded super-resolution)
        factor=2,
        cond_noise_max=0.2,  # conditioning augmentation: std ~ U[0, max] at training
        sample_cond_noise=0.0,
    ))

    # Evaluators (vdiff/eval/evaluators.py): name → settings overriding its defaults, e.g.
    # c.evals.fvd = dict(num_videos=256). Run on the EMA params every train.eval_every steps
    # and by --mode=eval; results go to TensorBoard and WORKDIR/eval.jsonl.
    c.evals = ml_collections.ConfigDict()
    # Per-application `--mode=sample` settings, any SampleOptions field (vdiff/sampling.py),
    # e.g. c.apps.extend = dict(num_frames=64, sampler='ddim', num_steps=32).
    c.apps = ml_collections.ConfigDict()

    c.mesh = ml_collections.ConfigDict(dict(shape=(-1, 1, 1)))  # (data, fsdp, tensor)
    c.sharding = ml_collections.ConfigDict(dict(logical_axis_rules=()))  # () = defaults
    return c


PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")


def root_key(config: ml_collections.ConfigDict) -> jax.Array:
    """The run's root PRNG key: `config.seed` under `config.train.prng_impl`."""
    impl = config.train.get("prng_impl", "threefry2x32")
    if impl not in PRNG_IMPLS:
        raise ConfigError(f"train.prng_impl={impl!r}; choose one of {PRNG_IMPLS}")
    return jax.random.key(config.seed, impl=impl)
