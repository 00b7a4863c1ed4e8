"""DreamPose finetuning stages on the shared `train_step` (`vdiff.models.dreampose`).

Methods (registered in `vdiff.methods.METHODS`):

``dreampose`` with ``dreampose.stage``
  'dataset'  (subject image, 5-frame pose window, target frame) triples of many videos;
             the UNet (+10 zero-init pose channels) and the adapter train, CLIP and the VAE
             are frozen. Base weights: ``model.sd=PATH`` (diffusers SD folder, CLIP image
             encoder from ``model.clip`` or <sd>/image_encoder), or the tiny demo model
             (``model.sd=''``): random tiny UNet/CLIP + the VAE of a ``dreampose_vae``
             'pretrain' run named by ``dreampose.base_vae``.
  'subject'  photos of one person (pairs: condition photo → target photo with its pose,
             random crops), initialised from ``dreampose.init_from`` (a dataset-stage run).
``dreampose_vae`` with ``dreampose.stage``
  'vae_decoder'  DreamPose's VAE-decoder finetune on the subject photos: only the decoder
                 (+ post_quant_conv) trains, L2 + L1 reconstruction through the frozen
                 encoder; all other params are carried along, so this run's checkpoint is
                 the complete final model (``init_from`` = the subject run).
  'vae_pretrain' trains the tiny demo VAE from scratch on synthetic frames (L2 + L1 + KL):
                 the demo's base latent model is a real trained autoencoder.

Frozen parameters stay in the train state (so every checkpoint is a complete model) and get
`optax.set_to_zero`. Images are float32 in [−1, 1] everywhere (batches, VAE, CLIP input via
`clip_preprocess`, outputs). Data: `vdiff.data.dreampose_data` (`make_iterator`); the
training loop is the shared trainer (`python -m vdiff.main --config=configs/dreampose_*.py`),
which takes the method's iterator, its initial weights (`initial_params`) and its host-side
sampler (`host_sample`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vdiff import config_lib, progress, runtime
from vdiff.data import dreampose_data
from vdiff.data import pose as pose_lib
from vdiff.data.sampled_batches import SampledBatches
from vdiff.diffusion import samplers, targets
from vdiff.errors import ConfigError
from vdiff.methods.base import Method
from vdiff.models import dreampose as dp
from vdiff.train.state import make_optimizer

DIFFUSION_STAGES = ("dataset", "subject")
VAE_STAGES = ("vae_pretrain", "vae_decoder")
DECODER_KEYS = ("decoder", "post_quant_conv")


def dreampose_defaults(stage: str) -> ml_collections.ConfigDict:
    """Every key a DreamPose run reads.

    data: name ('synthetic_people' | 'pose_videos'), source_dir (pose_videos root),
      subject_dir (frames/ + poses/ of the subject), resolution, num_subjects, num_frames,
      synthetic_seed, num_subject_photos, crop_min (random-crop side fraction, 1 = off)
    model: sd (diffusers folder; '' = a from-scratch model of `size`, 'tiny' | 'micro'), clip (CLIP vision folder, '' =
      <sd>/image_encoder), scaling_factor (tiny VAE latent scale), dtype, remat,
      attention_impl
    dreampose: stage, init_from (previous stage's workdir), base_vae (tiny: vae_pretrain
      workdir), p_image, p_pose, p_both (condition dropout), train_parts (params that
      train in diffusion stages), kl_weight, l1_weight (VAE stages), s_image, s_pose,
      sampler (periodic samples)
    """
    if stage not in DIFFUSION_STAGES + VAE_STAGES:
        raise ConfigError(f"unknown DreamPose stage {stage!r}")
    base = config_lib.vdm_defaults()
    c = ml_collections.ConfigDict()
    c.method = "dreampose" if stage in DIFFUSION_STAGES else "dreampose_vae"
    c.seed = 0
    c.data = ml_collections.ConfigDict(dict(
        name="synthetic_people", source_dir="", subject_dir="", resolution=64,
        num_subjects=48, num_frames=24, synthetic_seed=0, num_subject_photos=4,
        crop_min=1.0 if stage in ("dataset", "vae_pretrain") else 0.8, worker_count=0))
    c.model = ml_collections.ConfigDict(dict(
        sd="", clip="", size="tiny", scaling_factor=1.0, dtype="auto", remat=False,
        attention_impl="auto"))
    c.dreampose = ml_collections.ConfigDict(dict(
        stage=stage, init_from="", base_vae="", p_image=0.05, p_pose=0.05, p_both=0.05,
        train_parts=("unet", "adapter"), kl_weight=1e-4, l1_weight=1.0, s_image=2.0,
        s_pose=4.0, sampler="ddim"))
    c.train = base.train
    c.train.update(dict(batch_size=8, num_steps=1000, lr=5e-5, warmup_steps=0, ema_decay=0.0,
                        log_every=50, checkpoint_every=1000, sample_every=0,
                        async_checkpoints=False, keep_checkpoints=1))
    c.sample = base.sample
    c.sample.update(dict(num_samples=4, num_steps=25))
    c.evals = base.evals
    c.mesh = base.mesh
    c.sharding = base.sharding
    return c


# ---------------------------------------------------------------------- weights


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    from vdiff.core.workdir import config_path, read_config

    cfg = read_config(workdir)
    if cfg is None:
        raise ConfigError(f"{workdir!r} holds no DreamPose run ({config_path(workdir)} is "
                          "missing): train one first (python -m vdiff.main "
                          "--config=configs/dreampose_*.py --workdir=...)")
    return cfg


def load_animation_config(workdir: str) -> ml_collections.ConfigDict:
    """The config of a DreamPose run that holds a diffusion model (a dataset, subject or
    VAE-decoder run), read before any weights so bad inputs fail fast."""
    config = load_run_config(workdir)
    if config.method not in ("dreampose", "dreampose_vae") or (
            config.dreampose.stage == "vae_pretrain"):
        raise ConfigError(f"{workdir} is a {config.method}/{config.dreampose.stage} run "
                          "without a diffusion model; pass the subject or VAE-decoder run")
    return config


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
    """(config, params as numpy) of a finished DreamPose run: the EMA params when the run
    kept an EMA (train.ema_decay > 0), else the raw params."""
    from vdiff.train.checkpoint import load_raw

    cfg = load_run_config(workdir)
    try:
        _, state, _ = load_raw(os.path.join(workdir, "checkpoints"))
    except FileNotFoundError:
        raise ConfigError(f"{workdir} has a config but no checkpoint (weights): was its "
                          "training interrupted before the first save?") from None
    key = "ema_params" if float(cfg.train.ema_decay) > 0 else "params"
    return cfg, jax.tree.map(np.asarray, state[key])


def build_model(config: Any) -> dp.DreamPoseModel:
    """The architecture named by `config.model` (weights are loaded elsewhere)."""
    m = config.model
    impl = runtime.attention_impl(m.attention_impl)
    if not m.sd:
        cfgs = dp.tiny_configs(m.size)
        cfgs["vae"] = dataclasses.replace(cfgs["vae"], scaling_factor=float(m.scaling_factor))
        return dp.DreamPoseModel.from_configs(**cfgs, dtype=m.dtype, remat=bool(m.remat),
                                              attention_impl=impl)
    from vdiff.models.sd import convert
    from vdiff.models.sd.clip import CLIPVisionConfig
    from vdiff.models.sd.latent_diffusion import DiscreteSchedule, load_scheduler_config
    from vdiff.models.sd.unet import UNetConfig
    from vdiff.models.sd.vae import VAEConfig

    clip_root = m.clip or os.path.join(m.sd, "image_encoder")
    for path in (os.path.join(m.sd, "unet"), os.path.join(m.sd, "vae"), clip_root):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ConfigError(f"missing {path}/config.json: model.sd must be a diffusers SD "
                              "folder and model.clip a CLIP vision folder with projection")
    sched = load_scheduler_config(m.sd)
    return dp.DreamPoseModel.from_configs(
        unet=UNetConfig.from_diffusers_config(convert.load_config(os.path.join(m.sd, "unet"))),
        vae=VAEConfig.from_diffusers_config(convert.load_config(os.path.join(m.sd, "vae"))),
        clip=CLIPVisionConfig.from_transformers_config(convert.load_config(clip_root)),
        dtype=m.dtype, remat=bool(m.remat), attention_impl=impl,
        schedule=DiscreteSchedule.from_scheduler_config(sched),
        prediction_type=sched.get("prediction_type", "epsilon"))


def _labels(params: Any, trainable) -> Any:
    """'train' / 'frozen' per leaf; trainable(path_keys) decides."""
    def label(path, _):
        keys = tuple(getattr(p, "key", str(p)) for p in path)
        return "train" if trainable(keys) else "frozen"
    return jax.tree_util.tree_map_with_path(label, params)


def _masked_optimizer(train_config: Any, trainable):
    tx, schedule = make_optimizer(train_config)
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                                 lambda p: _labels(p, trainable)), schedule


# ---------------------------------------------------------------------- diffusion stages


_ANIMATE_HINT = "DreamPose animates a photo with python -m vdiff.dreampose_cli"


class DreamPose(Method):
    """`dreampose`: the dataset and subject finetuning stages."""

    host_sample = True  # `sample` loops over frames on the host; the trainer does not jit it
    applications: dict[str, str] = {}
    application_hint = _ANIMATE_HINT

    def __init__(self, config: Any):
        self.config = config
        self.stage = config.dreampose.stage
        if self.stage not in DIFFUSION_STAGES:
            raise ConfigError(f"method 'dreampose' runs stages {DIFFUSION_STAGES}, got "
                              f"{self.stage!r} (VAE stages: method 'dreampose_vae')")
        self.model = build_model(config)
        self.resolution = int(config.data.resolution)
        d = config.dreampose
        self.dropout = dict(p_image=float(d.p_image), p_pose=float(d.p_pose),
                            p_both=float(d.p_both))
        dp.condition_dropout(jax.random.key(0), 1, **self.dropout)  # validates
        self.train_parts = tuple(d.train_parts)
        if self.stage == "subject" and not d.init_from:
            raise ConfigError("the subject stage needs dreampose.init_from=WORKDIR of a "
                              "dataset-stage run")

    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        r = self.resolution
        return {"subject_image": np.zeros((batch_size, r, r, 3), np.float32),
                "pose": np.zeros((batch_size, r, r, dp.POSE_CHANNELS), np.float32),
                "frame": np.zeros((batch_size, r, r, 3), np.float32)}

    def make_iterator(self, batch_size: int, seed: int):
        sample = (dreampose_data.dataset_sampler if self.stage == "dataset"
                  else dreampose_data.subject_sampler)(self.config.data)
        return SampledBatches(sample, batch_size, seed)

    def init(self, rng: jax.Array, batch: dict[str, Any]) -> Any:
        del batch
        return self.model.init(rng, self.resolution)

    def initial_params(self) -> Any | None:
        """Host weights that replace the random init (None: keep it)."""
        d, m = self.config.dreampose, self.config.model
        if self.stage == "subject" or d.init_from:
            return load_run(d.init_from)[1]
        if m.sd:
            return jax.tree.map(np.asarray, dp.DreamPoseModel.from_pretrained(
                m.sd, m.clip, dtype=m.dtype)[1])
        if d.base_vae:
            _, params = load_run(d.base_vae)
            return {"vae": params["vae"]}  # merged into the random tiny UNet / CLIP
        logging.warning("tiny DreamPose without dreampose.base_vae: the VAE is random")
        return None

    def optimizer(self, train_config: Any):
        parts = self.train_parts
        return _masked_optimizer(train_config, lambda keys: keys[0] in parts)

    def loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array, *,
             train: bool = True, step: jax.Array | None = None):
        del train, step
        m = self.model
        frozen = {k: jax.lax.stop_gradient(params[k]) for k in ("vae", "clip")}
        p = {**params, **frozen}
        r_lat, r_drop, r_t, r_eps = jax.random.split(rng, 4)
        b = batch["frame"].shape[0]
        # One encoder call for target frames (posterior sample) and subject images (mean).
        mean, logvar = m.vae.apply({"params": p["vae"]}, jnp.concatenate(
            [batch["frame"], batch["subject_image"]]), method=m.vae.encode)
        from vdiff.models.sd.vae import sample_latent
        x0 = sample_latent(r_lat, mean[:b], logvar[:b]) * m.scaling_factor
        subject_lat = mean[b:] * m.scaling_factor
        context = m.image_context(p, batch["subject_image"], latents=subject_lat)
        pose = m.pose_to_latent(batch["pose"], x0.shape[1:3])
        keep_image, keep_pose = dp.condition_dropout(r_drop, b, **self.dropout)
        context = jnp.where(keep_image[:, None, None], context, 0.0)
        pose = jnp.where(keep_pose[:, None, None, None], pose, 0.0)
        n = m.schedule.num_timesteps
        t = jax.random.randint(r_t, (b,), 0, n)
        logsnr = jnp.asarray(m.schedule.logsnr_table)[t]
        eps = jax.random.normal(r_eps, x0.shape)
        z_t = targets.q_sample(x0=x0, eps=eps, logsnr=logsnr)
        out = m.unet_out(p, z_t, t.astype(jnp.float32), context, pose)
        target = m.training_target(x0, eps, logsnr)
        loss = jnp.mean(jnp.square(out - target))
        return loss, {"latent_std": jnp.std(x0),
                      "keep_image": jnp.mean(keep_image.astype(jnp.float32)),
                      "keep_pose": jnp.mean(keep_pose.astype(jnp.float32))}

    def sample(self, params: Any, rng: jax.Array, *, num_samples: int,
               num_steps: int = 25, **unused: Any) -> jax.Array:
        """num_samples frames of the first subject photo following the photos' poses.
        Host-side (loops over frame chunks, numpy in and out): call it outside `jax.jit`."""
        photos = dreampose_data.subject_photos(self.config.data)
        n = len(photos["frames"])
        poses = photos["poses"][np.arange(num_samples) % n]
        d = self.config.dreampose
        video = animate(self.model, params, photos["frames"][0], poses, rng,
                        s_image=float(d.s_image), s_pose=float(d.s_pose),
                        num_steps=num_steps, sampler=d.sampler)
        return video[None]


# ---------------------------------------------------------------------- VAE stages


class DreamPoseVAE(Method):
    """`dreampose_vae`: decoder finetuning on subject photos, or the tiny VAE pretraining."""

    host_sample = True  # `sample` reads a host batch of photos
    applications: dict[str, str] = {}
    application_hint = _ANIMATE_HINT

    def __init__(self, config: Any):
        self.config = config
        self.stage = config.dreampose.stage
        if self.stage not in VAE_STAGES:
            raise ConfigError(f"method 'dreampose_vae' runs stages {VAE_STAGES}, got "
                              f"{self.stage!r}")
        if self.stage == "vae_decoder" and not config.dreampose.init_from:
            raise ConfigError("the vae_decoder stage needs dreampose.init_from=WORKDIR of a "
                              "subject-stage run")
        self.model = build_model(config)
        self.resolution = int(config.data.resolution)

    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        r = self.resolution
        return {"image": np.zeros((batch_size, r, r, 3), np.float32)}

    def make_iterator(self, batch_size: int, seed: int):
        sample = dreampose_data.vae_sampler(self.config.data,
                                            subject=self.stage == "vae_decoder")
        return SampledBatches(sample, batch_size, seed)

    def init(self, rng: jax.Array, batch: dict[str, Any]) -> Any:
        del batch
        if self.stage == "vae_pretrain":
            x = jnp.zeros((1, self.resolution, self.resolution, 3))
            return {"vae": self.model.vae.init(rng, x)["params"]}
        return self.model.init(rng, self.resolution)

    def initial_params(self) -> Any | None:
        if self.stage == "vae_pretrain":
            return None
        return load_run(self.config.dreampose.init_from)[1]

    def optimizer(self, train_config: Any):
        if self.stage == "vae_pretrain":
            return make_optimizer(train_config)
        return _masked_optimizer(train_config, lambda keys: keys[0] == "vae"
                                 and len(keys) > 1 and keys[1] in DECODER_KEYS)

    def loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array, *,
             train: bool = True, step: jax.Array | None = None):
        del train, step
        x = batch["image"]
        vae, vp = self.model.vae, params["vae"]
        mean, logvar = vae.apply({"params": vp}, x, method=vae.encode)
        metrics = {}
        if self.stage == "vae_pretrain":
            from vdiff.models.sd.vae import sample_latent
            z = sample_latent(rng, mean, logvar)
            kl = 0.5 * jnp.mean(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
            metrics["kl"] = kl
            extra = float(self.config.dreampose.kl_weight) * kl
        else:
            z, extra = jax.lax.stop_gradient(mean), 0.0
        recon = vae.apply({"params": vp}, z, method=vae.decode)
        mse = jnp.mean(jnp.square(recon - x))
        l1 = jnp.mean(jnp.abs(recon - x))
        metrics.update(mse=mse, psnr=10 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10)),
                       latent_std=jnp.std(mean))
        return mse + float(self.config.dreampose.l1_weight) * l1 + extra, metrics

    def sample(self, params: Any, rng: jax.Array, *, num_samples: int, **unused: Any):
        del rng, unused
        it = self.make_iterator(num_samples, 1234)
        x = jnp.asarray(next(it)["image"])
        recon = jnp.clip(self.model.vae.apply({"params": params["vae"]}, x), -1, 1)
        return jnp.concatenate([x, recon], axis=2)[:, None]


# ---------------------------------------------------------------------- animation


def animate(model: dp.DreamPoseModel, params: Any, image: np.ndarray, poses: np.ndarray,
            rng: jax.Array, *, s_image: float = 2.0, s_pose: float = 4.0,
            num_steps: int = 25, sampler: str = "ddim", shared_noise: bool = False,
            frame_batch: int = 8, window_radius: int = 2) -> np.ndarray:
    """One subject image [H, W, 3] in [−1, 1] + pose maps [T, H, W, 2] → video [T, H, W, 3].

    Each frame is sampled independently (frame by frame, `frame_batch` at a time) with dual
    classifier-free guidance; frame t sees the window p_{t−2..t+2}. shared_noise: every frame
    uses the same noise (the same sampler RNG), which keeps the appearance steadier."""
    image = np.asarray(image, np.float32)
    poses = np.asarray(poses, np.float32)
    if image.ndim != 3 or poses.ndim != 4 or poses.shape[-1] != dp.POSE_CHANNELS_PER_FRAME:
        raise ConfigError(f"animate needs image [H, W, 3] and poses [T, H, W, 2], got "
                          f"{image.shape} and {poses.shape}")
    if poses.shape[1:3] != image.shape[:2]:
        raise ConfigError(f"pose maps are {poses.shape[1:3]} but the image is "
                          f"{image.shape[:2]}")
    windows = pose_lib.pose_windows(poses, window_radius)
    t_total = len(windows)
    f = min(frame_batch, t_total)
    fn = _animate_chunk_fn(model, sampler, int(num_steps))
    rngs = (jnp.stack([rng] * t_total) if shared_noise
            else jax.random.split(rng, t_total))
    out = []
    for start in progress.track(range(0, t_total, f), f"DreamPose: {t_total} frames",
                                unit=f"batches of {f}"):
        chunk = windows[start:start + f]
        r = rngs[start:start + f]
        pad = f - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
            r = jnp.concatenate([r, jnp.stack([r[-1]] * pad)])
        frames = fn(params, jnp.asarray(image), jnp.asarray(chunk), r,
                    jnp.float32(s_image), jnp.float32(s_pose))
        out.append(np.asarray(frames)[:f - pad])
    return np.concatenate(out)


_CHUNK_FNS: dict[Any, Any] = {}


def _animate_chunk_fn(model: dp.DreamPoseModel, sampler: str, num_steps: int):
    key = (id(model), sampler, num_steps)
    if key in _CHUNK_FNS:
        return _CHUNK_FNS[key][1]
    if sampler not in samplers.sampler_names():
        raise ConfigError(f"unknown sampler {sampler!r}; known: {samplers.sampler_names()}")

    def run(params, image, windows, rngs, s_image, s_pose):
        context = model.image_context(params, image[None])               # [1, L, D]
        h = image.shape[0] // model.downsample_factor
        w = image.shape[1] // model.downsample_factor
        pose = model.pose_to_latent(windows, (h, w))                     # [F, h, w, 10]

        def one(pose_f, rng_f):
            fn = model.denoiser(params, context, pose_f[None], s_image=s_image, s_pose=s_pose)
            return samplers.sample(sampler=sampler, denoise_fn=fn, rng=rng_f,
                                   shape=(1, h, w, model.latent_channels),
                                   logsnr_schedule=model.schedule.logsnr,
                                   num_steps=num_steps)[0]

        latents = jax.vmap(one)(pose, rngs)
        return model.decode(params, latents)

    fn = jax.jit(run)
    _CHUNK_FNS[key] = (model, fn)  # keeps the model alive so its id stays unique
    return fn
