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

import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vdiff.data import dreampose_data
from vdiff.data.sampled_batches import SampledBatches
from vdiff.diffusion import targets
from vdiff.errors import ConfigError
from vdiff.methods.base import Method
from vdiff.methods.dreampose.animation import animate
from vdiff.methods.dreampose.config import DIFFUSION_STAGES, VAE_STAGES
from vdiff.methods.dreampose.runs import build_model, load_run
from vdiff.models import dreampose as dp
from vdiff.train.state import make_optimizer

DECODER_KEYS = ("decoder", "post_quant_conv")


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
                        num_steps=num_steps, sampler=self.config.sample.get("sampler", "ddim"))
        return video[None]


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
