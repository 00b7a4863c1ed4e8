"""VDM: video diffusion with a factorized space-time UNet (Ho et al. 2022).

The registered method 'vdm': the UNet3D builder, joint image-video batch packing, the loss,
the guided denoiser and the sampling entry point, never the loop. Joint image-video
training packs the batch's K independent images after the T video frames; the
UNet's temporal attention is masked so each image frame only sees itself, and
the loss covers video and image frames alike (reported separately too).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vdiff import runtime
from vdiff.diffusion import guidance, losses, samplers, schedules, targets
from vdiff.errors import ConfigError
from vdiff.core.pixels import to_unit_range
from vdiff.methods.base import Method
from vdiff.models.unet3d import REMAT_POLICIES, UNet3D

_WINDOWS = "vdiff.sampling:sample_windows"  # pixel-space window applications


def build_unet(model_config: Any, *, out_channels: int) -> UNet3D:
    """UNet3D from `config.model`; 'auto' dtype, attention and fused_norm resolve per backend
    (`vdiff.runtime`)."""
    remat = model_config.get("remat", "none")
    if remat not in REMAT_POLICIES:
        raise ConfigError(f"model.remat {remat!r} not in {sorted(REMAT_POLICIES)}")
    return UNet3D(
        out_channels=out_channels,
        base_channels=model_config.base_channels,
        channel_mults=tuple(model_config.channel_mults),
        num_res_blocks=model_config.num_res_blocks,
        attn_resolutions=tuple(model_config.attn_resolutions),
        temporal_attn_resolutions=tuple(model_config.temporal_attn_resolutions),
        head_dim=model_config.head_dim,
        dropout=model_config.dropout,
        num_classes=model_config.num_classes,
        max_relative_distance=model_config.max_relative_distance,
        spatial_attention_impl=runtime.attention_impl(model_config.spatial_attention_impl),
        temporal_attention_impl=runtime.attention_impl(model_config.temporal_attention_impl,
                                                       long_sequences=False),
        dtype=runtime.compute_dtype(model_config.dtype),
        remat=remat,
        fused_norm=runtime.fused_norm(model_config.get("fused_norm", "off")),
    )


def pack_joint_batch(batch: dict[str, jax.Array], num_classes: int):
    """Video [B,T,...] + images [B,K,...] → frames [B,T+K,...], per-frame labels and image mask."""
    video = to_unit_range(batch["video"])
    b, t = video.shape[:2]
    labels = batch["label"] if num_classes else jnp.zeros((b,), jnp.int32)
    frame_labels = jnp.broadcast_to(labels[:, None], (b, t))
    is_image = jnp.zeros((b, t), bool)
    if "images" in batch and batch["images"].shape[1] > 0:
        images = to_unit_range(batch["images"])
        k = images.shape[1]
        video = jnp.concatenate([video, images], axis=1)
        img_labels = batch["image_labels"] if num_classes else jnp.zeros((b, k), jnp.int32)
        frame_labels = jnp.concatenate([frame_labels, img_labels], axis=1)
        is_image = jnp.concatenate([is_image, jnp.ones((b, k), bool)], axis=1)
    return video, frame_labels.astype(jnp.int32), is_image


def drop_labels(rng: jax.Array, frame_labels: jax.Array, is_image: jax.Array,
                *, null_class: int, drop_prob: float) -> jax.Array:
    """Replaces labels by the null class with prob `drop_prob`: once per video, once per image."""
    if drop_prob <= 0:
        return frame_labels
    b, f = frame_labels.shape
    coin = jax.random.bernoulli(rng, drop_prob, (b, f))
    # Video frames share the coin of frame 0; each image frame uses its own.
    drop = jnp.where(is_image, coin, coin[:, :1])
    return jnp.where(drop, null_class, frame_labels)


class VDM(Method):
    """Video Diffusion Model: `init`, `loss`, `denoiser`, `sample`."""

    applications = {"unconditional": _WINDOWS, "extend": _WINDOWS, "interpolate": _WINDOWS,
                    "super_resolve": _WINDOWS}  # super_resolve: by reconstruction guidance
    evaluators = ("fvd", "digit_score", "heldout_loss", "nearest_train")

    def __init__(self, config: Any):
        self.config = config
        self.channels = config.data.channels
        self.num_classes = config.model.num_classes
        self.model = build_unet(config.model, out_channels=self.channels)
        d = config.diffusion
        self.parameterization = d.parameterization
        targets.check_parameterization(self.parameterization)
        self.schedule = schedules.get_schedule(
            d.schedule, logsnr_min=d.logsnr_min, logsnr_max=d.logsnr_max)

    # -- shapes -------------------------------------------------------------
    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        """Zeros shaped like a pipeline batch (for init and shape checks)."""
        d = self.config.data
        r, t, k = d.resolution, d.num_frames, d.num_images_per_video
        batch = {"video": np.zeros((batch_size, t, r, r, self.channels), np.uint8),
                 "label": np.zeros((batch_size,), np.int32)}
        if k:
            batch["images"] = np.zeros((batch_size, k, r, r, self.channels), np.uint8)
            batch["image_labels"] = np.zeros((batch_size, k), np.int32)
        return batch

    # -- training -----------------------------------------------------------
    def conditioning(self, x0: jax.Array, rng: jax.Array | None) -> jax.Array | None:
        """Extra network input derived from the clean frames (None for plain VDM)."""
        del x0, rng
        return None

    def init(self, rng: jax.Array, batch: dict[str, Any]) -> Any:
        """Parameters (with logical-partitioning boxes) for a batch of this shape."""
        x, labels, is_image = pack_joint_batch(batch, self.num_classes)
        logsnr = jnp.zeros((x.shape[0],), jnp.float32)
        variables = self.model.init({"params": rng}, x, logsnr, labels=labels,
                                    frame_is_image=is_image, cond=self.conditioning(x, None),
                                    train=False)
        return variables["params"]

    def loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array,
             *, train: bool = True, step: jax.Array | None = None
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Weighted MSE (config.diffusion.loss_space) at a random noise level per example."""
        del step  # no curriculum
        d = self.config.diffusion
        with jax.named_scope("vdm_loss"):
            x0, labels, is_image = pack_joint_batch(batch, self.num_classes)
            rng_t, rng_eps, rng_drop, rng_dropout = jax.random.split(rng, 4)
            _, logsnr = losses.sample_logsnr(rng=rng_t, batch_size=x0.shape[0],
                                             schedule=self.schedule)
            eps = jax.random.normal(rng_eps, x0.shape, jnp.float32)
            z = targets.q_sample(x0=x0, eps=eps, logsnr=logsnr)
            if self.num_classes and train:
                labels = drop_labels(rng_drop, labels, is_image, null_class=self.num_classes,
                                     drop_prob=d.cond_drop_prob)
            out = self.model.apply({"params": params}, z, logsnr, labels=labels,
                                   frame_is_image=is_image, cond=self.conditioning(x0, rng_drop),
                                   train=train, rngs={"dropout": rng_dropout})
            per_frame = lambda mask: losses.diffusion_loss(  # noqa: E731
                x0=x0, eps=eps, logsnr=logsnr, model_output=out,
                parameterization=self.parameterization, loss_space=d.loss_space,
                weighting=d.weighting, mask=mask)
            loss = jnp.mean(per_frame(None))
            metrics = {"logsnr_mean": jnp.mean(logsnr)}
            if "images" in batch and batch["images"].shape[1] > 0:
                frame_mask = lambda m: m[:, :, None, None, None].astype(jnp.float32)  # noqa: E731
                metrics["loss_video"] = jnp.mean(per_frame(frame_mask(~is_image)))
                metrics["loss_image"] = jnp.mean(per_frame(frame_mask(is_image)))
        return loss, metrics

    # -- sampling -----------------------------------------------------------
    def denoiser(self, params: Any, *, labels: jax.Array | None = None,
                 guidance_scale: float = 0.0, cond: jax.Array | None = None):
        """`denoise_fn(z, logsnr) -> x0_hat`, with classifier-free guidance when scale > 0.

        Guidance ε̃ = (1 + w)·ε(z, c) − w·ε(z, ∅), i.e. scale s = 1 + w in
        `guidance.classifier_free_eps`, computed on x̂0 (the same affine map, well conditioned
        at low λ; `guidance.class_guided_denoiser`); w = 0 is the plain conditional model.
        """
        def predict(z, logsnr, lab):
            out = self.model.apply({"params": params}, z, logsnr, labels=lab, cond=cond,
                                   train=False)
            return targets.predictions(z=z, model_output=out, logsnr=logsnr,
                                       parameterization=self.parameterization)

        return guidance.class_guided_denoiser(
            predict, labels, null_class=self.num_classes,
            weight=guidance_scale if self.num_classes else 0.0)

    def sample_labels(self, num: int) -> jax.Array | None:
        """Classes of `num` samples, cycling through `sample.labels` (default: every class);
        None for an unconditional model."""
        if not self.num_classes:
            return None
        pool = tuple(int(c) for c in self.config.sample.get("labels", ())) or tuple(
            range(self.num_classes))
        if any(not 0 <= c < self.num_classes for c in pool):
            raise ConfigError(f"sample.labels {pool} must lie in [0, model.num_classes="
                              f"{self.num_classes})")
        return jnp.asarray([pool[i % len(pool)] for i in range(num)], jnp.int32)

    def sample(self, params: Any, rng: jax.Array, *, num_samples: int,
               labels: jax.Array | None = None, num_steps: int = 128,
               guidance_scale: float = 0.0, gamma: float = 0.3,
               sampler: str | None = None) -> jax.Array:
        """Samples in [−1, 1], shape [N, T, H, W, C], from `sampler` (default
        `sample.sampler`; x̂0 clipped to the pixel range at every step; `gamma` is the
        ancestral sampler's variance mix)."""
        sampler = sampler or self.config.sample.get("sampler", "ancestral")
        d = self.config.data
        shape = (num_samples, d.num_frames, d.resolution, d.resolution, self.channels)
        if labels is None:
            labels = self.sample_labels(num_samples)
        fn = self.denoiser(params, labels=labels, guidance_scale=guidance_scale)
        options = {"gamma": gamma} if sampler == "ancestral" else {}
        return samplers.sample(sampler=sampler, denoise_fn=fn, rng=rng, shape=shape,
                               logsnr_schedule=self.schedule, num_steps=num_steps,
                               clip_x0=True, **options)
