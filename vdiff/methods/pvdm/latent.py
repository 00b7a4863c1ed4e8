"""PVDM stage 2, ``pvdm_ldm``: diffusion over the triplane latents of a trained, frozen
autoencoder with one 2D UNet shared by the three planes (`vdiff.models.pvdm_unet`). A
training example is 2S frames = two consecutive clips (x¹, x²); the model learns p(z²) and
p(z² | z¹) jointly:

    cond = z¹ with probability λ (`cond_prob`), else 0;   loss on z² as in VDM

(cond_prob = 0 → an unconditional model on S-frame clips). The latents are flattened into
one token array [B, H′W′ + SW′ + SH′, C] (`triplane.to_tokens`) so every shared sampler in
`vdiff.diffusion.samplers` runs on them unchanged. Long videos: clip 1 from cond = 0, clip
k + 1 conditioned on the sampled latents of clip k, all decoded and concatenated
(`generate_long_video`, one `lax.scan` so any length compiles once).

The frozen autoencoder's parameters are copied into the LDM's train state at init (under
'autoencoder', never updated), so the LDM checkpoint carries the exact decoder it was
trained with. Constructing the method still reads the autoencoder run (`config.json` for
the architecture, and its latest checkpoint for `init`), so that run must stay available.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vdiff import runtime
from vdiff.core.pixels import to_unit_range
from vdiff.diffusion import guidance, losses, samplers, schedules, targets
from vdiff.errors import ConfigError
from vdiff.methods.base import Method
from vdiff.methods.pvdm import latent_cache
from vdiff.methods.pvdm.autoencoder import build_autoencoder, check_clip_data
from vdiff.methods.pvdm.weights import load_autoencoder_config, load_autoencoder_params
from vdiff.models import triplane
from vdiff.models.pvdm_unet import TriplaneUNet
from vdiff.train.state import make_optimizer


class PVDMLatentStage(Method):
    """`pvdm_ldm`: ε/v diffusion on frozen-autoencoder triplanes, clip-conditional."""

    applications = {"unconditional": "vdiff.sampling:run_pvdm_sampling",  # one clip's frames
                    "extend": "vdiff.sampling:run_pvdm_sampling"}  # long videos, clip by clip
    evaluators = ("fvd", "digit_score", "heldout_loss", "nearest_train")

    def __init__(self, config: Any, *, autoencoder: tuple[Any, Any] | None = None):
        """`autoencoder` = (pvdm_ae config, its autoencoder params) bypasses
        `pvdm.autoencoder_workdir` (benchmarks, notebooks, tests)."""
        self.config = config
        p, d = config.pvdm, config.data
        self.ae_config = (autoencoder[0] if autoencoder is not None
                          else load_autoencoder_config(p.autoencoder_workdir))
        ae_data = self.ae_config.data
        self.clip_frames = int(p.clip_frames)
        self.cond_prob = float(p.cond_prob)
        if not 0.0 <= self.cond_prob <= 1.0:
            raise ConfigError(f"pvdm.cond_prob={self.cond_prob} must be in [0, 1]")
        self.conditional = self.cond_prob > 0
        if int(ae_data.num_frames) != self.clip_frames:
            raise ConfigError(f"pvdm.clip_frames={self.clip_frames} but the autoencoder "
                              f"was trained on {ae_data.num_frames}-frame clips")
        for key in ("resolution", "channels"):
            if int(ae_data[key]) != int(d[key]):
                raise ConfigError(f"data.{key}={d[key]} differs from the autoencoder's "
                                  f"{ae_data[key]} ({p.autoencoder_workdir})")
        check_clip_data(config, self.clip_frames * (2 if self.conditional else 1))
        self.channels, self.resolution = int(d.channels), int(d.resolution)
        self.autoencoder = build_autoencoder(self.ae_config.model, self.channels)
        am = self.ae_config.model
        self.latent_channels = int(am.latent_channels)
        self.template = triplane.plane_shapes(
            num_frames=self.clip_frames, height=self.resolution, width=self.resolution,
            patch_size=int(am.patch_size), channels=self.latent_channels)
        self.num_tokens = sum(a * b for a, b, _ in self.template)
        m = config.model
        self.num_classes = int(m.get("num_classes", 0))  # absent in older configs
        self.sample_label_list = tuple(int(x) for x in p.get("sample_labels", ()))
        if any(not 0 <= x < self.num_classes for x in self.sample_label_list):
            raise ConfigError(f"pvdm.sample_labels {self.sample_label_list} must lie in "
                              f"[0, model.num_classes={self.num_classes})")
        self.model = TriplaneUNet(
            out_channels=self.latent_channels, base_channels=int(m.base_channels),
            channel_mults=tuple(m.channel_mults), num_res_blocks=int(m.num_res_blocks),
            attn_levels=tuple(m.attn_levels), head_dim=int(m.head_dim),
            dropout=float(m.dropout), attention_impl=runtime.attention_impl(m.attention_impl),
            remat=bool(m.remat), dtype=runtime.compute_dtype(m.dtype),
            num_classes=self.num_classes,
            axis_positions=bool(m.get("axis_positions", False)),  # absent in older configs
            plane_inputs=bool(m.get("plane_inputs", False)))  # ditto: keeps their weights valid
        diff = config.diffusion
        self.parameterization = diff.parameterization
        targets.check_parameterization(self.parameterization)
        self.schedule = schedules.get_schedule(diff.schedule, logsnr_min=diff.logsnr_min,
                                               logsnr_max=diff.logsnr_max)
        self.num_frames = int(p.sample_num_frames) or int(d.num_frames)
        # Read now, outside any trace (init runs under jax.eval_shape / jit); host numpy.
        self.ae_params = (autoencoder[1] if autoencoder is not None
                          else load_autoencoder_params(self.ae_config, p.autoencoder_workdir))

    # -- shapes and pieces ---------------------------------------------------
    @property
    def clips_per_example(self) -> int:
        return 2 if self.conditional else 1

    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        if self.config.pvdm.get("cache_latents", False):
            return {"latents": np.zeros((batch_size, self.clips_per_example, self.num_tokens,
                                         self.latent_channels), np.float32),
                    "label": np.zeros((batch_size,), np.int32)}
        r, t = self.resolution, int(self.config.data.num_frames)
        return {"video": np.zeros((batch_size, t, r, r, self.channels), np.uint8),
                "label": np.zeros((batch_size,), np.int32)}

    # -- cached latents (pvdm.cache_latents; the host loops are in latent_cache) --
    def training_latents(self, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [N, clips, L, C], int32 labels [N]): the frozen encoder's latents of
        every example of the training split (clip 1 then clip 2 for a conditional model)
        and the examples' labels (data.label_from)."""
        return latent_cache.training_latents(self, batch_size)

    def make_iterator(self, batch_size: int, seed: int):
        """The trainer's data source with pvdm.cache_latents (None: the shared pipeline).
        Examples are drawn uniformly with replacement from the cached latents."""
        if not self.config.pvdm.get("cache_latents", False):
            return None
        return latent_cache.cached_batches(*self.training_latents(), batch_size, seed)

    def optimizer(self, train_config: Any) -> tuple[optax.GradientTransformation, Any]:
        """The UNet trains with `train`'s optimizer; the autoencoder copy is frozen."""
        tx, schedule = make_optimizer(train_config)
        labels = lambda params: {k: ("unet" if k == "unet" else "frozen")  # noqa: E731
                                 for k in params}
        return optax.multi_transform({"unet": tx, "frozen": optax.set_to_zero()},
                                     labels), schedule

    def planes(self, tokens: jax.Array) -> triplane.Triplane:
        like = triplane.Triplane(*(jax.ShapeDtypeStruct((tokens.shape[0], *s), tokens.dtype)
                                   for s in self.template))
        return triplane.from_tokens(tokens, like)

    def encode(self, params: Any, video: jax.Array) -> jax.Array:
        """Clips [B, S, H, W, C] in [−1, 1] → latent tokens [B, L, C] (no gradient)."""
        ae = jax.lax.stop_gradient(params["autoencoder"])
        planes = self.autoencoder.apply({"params": ae}, video, method=self.autoencoder.encode)
        return triplane.to_tokens(planes)

    def decode(self, params: Any, tokens: jax.Array) -> jax.Array:
        return self.autoencoder.apply({"params": params["autoencoder"]}, self.planes(tokens),
                                      method=self.autoencoder.decode)

    def apply(self, params: Any, z: jax.Array, logsnr: jax.Array, cond: jax.Array | None,
              *, labels: jax.Array | None = None, train: bool = False,
              rng: jax.Array | None = None) -> jax.Array:
        cond_planes = self.planes(cond) if self.conditional else None
        if self.num_classes and labels is None:
            raise ValueError("this latent model is class-conditional (model.num_classes="
                             f"{self.num_classes}): pass labels ({self.num_classes} = null)")
        out = self.model.apply({"params": params["unet"]}, self.planes(z), logsnr,
                               cond=cond_planes, labels=labels if self.num_classes else None,
                               train=train, rngs={"dropout": rng} if rng is not None else {})
        return triplane.to_tokens(out)

    def init(self, rng: jax.Array, batch: dict[str, Any]) -> Any:
        b = next(iter(batch.values())).shape[0]
        z = jnp.zeros((b, self.num_tokens, self.latent_channels), jnp.float32)
        cond = self.planes(z) if self.conditional else None
        labels = jnp.zeros((b,), jnp.int32) if self.num_classes else None
        unet = self.model.init({"params": rng}, self.planes(z), jnp.zeros((b,)), cond=cond,
                               labels=labels)
        return {"unet": unet["params"], "autoencoder": self.ae_params}

    # -- training --------------------------------------------------------------
    def loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array, *,
             train: bool = True, step: jax.Array | None = None
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        del step
        with jax.named_scope("pvdm_ldm_loss"):
            rng_c, rng_t, rng_eps, rng_drop, rng_label = jax.random.split(rng, 5)
            if "latents" in batch:  # pvdm.cache_latents: [B, clips, L, C]
                latents = jnp.asarray(batch["latents"], jnp.float32)
                b = latents.shape[0]
                z_prev, x0 = latents[:, 0], latents[:, -1]
            else:
                video = to_unit_range(batch["video"])
                b, s = video.shape[0], self.clip_frames
                if self.conditional:  # one encoder call for both clips
                    both = self.encode(params, jnp.concatenate([video[:, :s], video[:, s:]]))
                    z_prev, x0 = both[:b], both[b:]
                else:
                    z_prev, x0 = None, self.encode(params, video)
            if self.conditional:
                keep = jax.random.bernoulli(rng_c, self.cond_prob, (b, 1, 1))
                cond = jnp.where(keep, z_prev, 0.0)
            else:
                cond, keep = None, None
            labels = None
            if self.num_classes:  # classifier-free guidance: drop to the null class
                drop = jax.random.bernoulli(rng_label, float(self.config.diffusion.cond_drop_prob),
                                            (b,))
                labels = jnp.where(drop, self.num_classes, batch["label"].astype(jnp.int32))
            _, logsnr = losses.sample_logsnr(rng=rng_t, batch_size=b, schedule=self.schedule)
            eps = jax.random.normal(rng_eps, x0.shape, jnp.float32)
            z = targets.q_sample(x0=x0, eps=eps, logsnr=logsnr)
            out = self.apply(params, z, logsnr, cond, labels=labels, train=train, rng=rng_drop)
            d = self.config.diffusion
            per_example = losses.diffusion_loss(
                x0=x0, eps=eps, logsnr=logsnr, model_output=out,
                parameterization=self.parameterization, loss_space=d.loss_space,
                weighting=d.weighting)
            metrics = {"logsnr_mean": jnp.mean(logsnr), "latent_std": jnp.std(x0)}
            if keep is not None:
                k = keep[:, 0, 0].astype(jnp.float32)
                metrics["loss_conditional"] = jnp.sum(per_example * k) / jnp.maximum(k.sum(), 1)
                metrics["loss_unconditional"] = (jnp.sum(per_example * (1 - k))
                                                 / jnp.maximum((1 - k).sum(), 1))
        return jnp.mean(per_example), metrics

    # -- sampling ----------------------------------------------------------------
    def sample_labels(self, num: int) -> jax.Array | None:
        """Classes of `num` samples: cycling through pvdm.sample_labels (or every class);
        None for a model without classes."""
        if not self.num_classes:
            return None
        classes = jnp.asarray(self.sample_label_list or range(self.num_classes), jnp.int32)
        return classes[jnp.arange(num) % len(classes)]

    def denoiser(self, params: Any, cond: jax.Array | None, *,
                 labels: jax.Array | None = None, guidance_scale: float = 0.0):
        """`denoise_fn(z, logsnr) -> x̂0`; with labels and w = guidance_scale > 0,
        classifier-free guidance ε̃ = (1 + w)·ε(z, c) − w·ε(z, ∅) (both share `cond`)."""
        def predict(z, logsnr, lab):
            out = self.apply(params, z, logsnr, cond, labels=lab)
            return targets.predictions(z=z, model_output=out, logsnr=logsnr,
                                       parameterization=self.parameterization)

        return guidance.class_guided_denoiser(
            predict, labels, null_class=self.num_classes,
            weight=guidance_scale if self.num_classes else 0.0)

    def sample_latents(self, params: Any, rng: jax.Array, num: int, cond: jax.Array | None, *,
                       sampler: str, num_steps: int, labels: jax.Array | None = None,
                       guidance_scale: float = 0.0, **kwargs: Any) -> jax.Array:
        """Latent tokens [num, L, C] of one clip given the previous clip's (or zeros)."""
        if self.num_classes and labels is None:
            labels = self.sample_labels(num)
        denoise_fn = self.denoiser(params, cond, labels=labels, guidance_scale=guidance_scale)
        return samplers.sample(sampler=sampler, denoise_fn=denoise_fn, rng=rng,
                               shape=(num, self.num_tokens, self.latent_channels),
                               logsnr_schedule=self.schedule, num_steps=num_steps,
                               clip_x0=True, **kwargs)  # tanh-bounded latents

    def generate_long_video(self, params: Any, rng: jax.Array, num: int, num_frames: int, *,
                            sampler: str = "ddim", num_steps: int = 100,
                            labels: jax.Array | None = None, guidance_scale: float = 0.0,
                            **kwargs: Any) -> jax.Array:
        """[num, num_frames, H, W, C] in [−1, 1]: clip 1 unconditional, each next clip
        conditioned on the previous clip's latents; decoded and concatenated. A
        class-conditional model keeps each video's label (default `sample_labels`) for
        every clip."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be ≥ 1, got {num_frames}")
        clips = math.ceil(num_frames / self.clip_frames)
        if clips > 1 and not self.conditional:
            raise ConfigError("this latent model is unconditional (pvdm.cond_prob=0): it "
                              f"makes {self.clip_frames}-frame clips only")

        def one_clip(prev, clip_rng):
            cond = prev if self.conditional else None
            z = self.sample_latents(params, clip_rng, num, cond, sampler=sampler,
                                    num_steps=num_steps, labels=labels,
                                    guidance_scale=guidance_scale, **kwargs)
            return z, jnp.clip(self.decode(params, z), -1.0, 1.0)

        start = jnp.zeros((num, self.num_tokens, self.latent_channels), jnp.float32)
        _, videos = jax.lax.scan(one_clip, start, jax.random.split(rng, clips))
        videos = jnp.moveaxis(videos, 0, 1)  # [num, clips, S, H, W, C]
        return videos.reshape(num, clips * self.clip_frames, *videos.shape[3:])[:, :num_frames]

    def sample(self, params: Any, rng: jax.Array, *, num_samples: int,
               num_steps: int = 100, guidance_scale: float = 0.0, gamma: float = 0.3,
               labels: jax.Array | None = None, **unused: Any) -> jax.Array:
        """The trainer's periodic samples and the sampling evaluators: `num_frames` frames
        per video; a class-conditional model's labels default to `sample_labels(num_samples)`."""
        del unused
        sampler = self.config.sample.get("sampler", "ddim")
        kwargs = {"gamma": gamma} if sampler == "ancestral" else {}
        return self.generate_long_video(params, rng, num_samples, self.num_frames,
                                        sampler=sampler, num_steps=num_steps, labels=labels,
                                        guidance_scale=guidance_scale, **kwargs)
