r"""DreamPose (Karras et al. 2023, arXiv 2304.06025): an SD-style latent model conditioned on
one subject image and a window of pose maps.

Pieces (all images in [−1, 1], NHWC; pose maps in [−1, 1] with background −1):

* **Split CLIP–VAE image encoder.** The subject image gives
    - CLIP image tokens  c = W_proj · post_LN(h_L)  per token (h_L: the vision tower's last
      hidden state, all 1 + P tokens). We use the *projected per-token* embeddings so the
      token width is CLIP's projection_dim, which for SD 1.x + ViT-L/14 is 768 = the UNet's
      cross-attention width: the context is meaningful to a pretrained UNet without any
      new weights. (The CLS token's projection is exactly transformers' `image_embeds`.)
    - VAE features  v = the subject latent (posterior mean × scaling) average-pooled onto
      the CLIP patch grid (√P × √P); the CLS slot gets the global mean.
  The adapter mixes them per token: ctx = [c, v] A + b, with A initialised to [I; 0] and
  b = 0, so at initialisation ctx == c exactly (the CLIP-only context); the VAE branch is
  learned during finetuning (`ImageConditionAdapter`, tested).
* **Pose input.** 5 consecutive pose maps p_{i−2} … p_{i+2} (2 channels each, distinct
  frames, clamped at the ends: `vdiff.data.pose.pose_window`) are resized to the latent
  grid and concatenated to z_t: the UNet's conv_in gets 10 extra input channels whose
  weights start at zero (`unet.widen_input_channels`), so the widened UNet computes the
  pretrained function at initialisation (tested).
* **Null conditions.** ∅ image = an all-zero context; ∅ pose = all-zero pose channels
  (a real pose map is −1 on the background, so zero is not a real pose).
  `condition_dropout` draws per-sample keep masks: both dropped with p_both, only the image
  with p_image, only the pose with p_pose (disjoint events).
* **Dual classifier-free guidance** through `vdiff.diffusion.guidance.multi_condition_eps`:
      ε̃ = ε(∅,∅) + s_I (ε(I,∅) − ε(∅,∅)) + s_p (ε(I,p) − ε(I,∅))
  evaluated as one network call on a 3× batch (`DreamPoseModel.guided_eps`).

Parameters live in one dict {"unet", "adapter", "clip", "vae"}; which of them train is
the method's business (`vdiff.methods.dreampose`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vdiff import runtime
from vdiff.diffusion import guidance, targets
from vdiff.errors import ConfigError
from vdiff.models.sd.clip import CLIPVisionConfig, CLIPVisionModelWithProjection, clip_preprocess
from vdiff.models.sd.latent_diffusion import DiscreteSchedule, load_scheduler_config
from vdiff.models.sd.unet import UNet2DConditionModel, UNetConfig, widen_input_channels
from vdiff.models.sd.vae import AutoencoderKL, VAEConfig, sample_latent

Array = jax.Array
POSE_FRAMES = 5
POSE_CHANNELS_PER_FRAME = 2
POSE_CHANNELS = POSE_FRAMES * POSE_CHANNELS_PER_FRAME


# ------------------------------------------------------------------------------ adapter


def _identity_zero_init(clip_dim: int):
    """Kernel [clip_dim + vae_dim, clip_dim] = [I; 0]."""

    def init(key, shape, dtype=jnp.float32):
        del key
        if shape[1] != clip_dim or shape[0] < clip_dim:
            raise ValueError(f"adapter kernel {shape} cannot be [I; 0] for width {clip_dim}")
        return jnp.concatenate([jnp.eye(clip_dim, dtype=dtype),
                                jnp.zeros((shape[0] - clip_dim, clip_dim), dtype)], axis=0)

    return init


def pool_latent_to_tokens(latent: Array, num_tokens: int) -> Array:
    """[B, h, w, C] latent → [B, num_tokens, C]: token 0 = global mean, tokens 1.. = the
    latent average-pooled onto a √(n−1) × √(n−1) grid (the CLIP patch grid). When n − 1 is
    not a square every token is the global mean."""
    b, h, w, c = latent.shape
    mean = jnp.mean(latent, axis=(1, 2))[:, None]
    g = math.isqrt(max(num_tokens - 1, 0))
    if g * g != num_tokens - 1 or g == 0:
        return jnp.broadcast_to(mean, (b, num_tokens, c))
    if h % g == 0 and w % g == 0:
        grid = latent.reshape(b, g, h // g, g, w // g, c).mean(axis=(2, 4))
    else:
        grid = jax.image.resize(latent, (b, g, g, c), method="linear", antialias=True)
    return jnp.concatenate([mean, grid.reshape(b, g * g, c)], axis=1)


class ImageConditionAdapter(nn.Module):
    """ctx = Dense(concat([clip_tokens, pooled VAE latent], -1)), kernel init [I; 0], bias 0:
    the output equals `clip_tokens` at initialisation whatever the VAE features are."""

    @nn.compact
    def __call__(self, clip_tokens: Array, vae_latent: Array) -> Array:
        d = clip_tokens.shape[-1]
        vae_tokens = pool_latent_to_tokens(vae_latent.astype(jnp.float32), clip_tokens.shape[1])
        x = jnp.concatenate([clip_tokens.astype(jnp.float32), vae_tokens], axis=-1)
        return nn.Dense(d, kernel_init=_identity_zero_init(d), bias_init=nn.initializers.zeros,
                        name="mix")(x)


# ------------------------------------------------------------------------------ dropout


def condition_dropout(rng: Array, batch: int, *, p_image: float, p_pose: float,
                      p_both: float) -> tuple[Array, Array]:
    """Per-sample (keep_image, keep_pose) booleans [batch]. One uniform u per sample:
    u < p_both drops both; the next p_image drops only the image; the next p_pose only the
    pose. So P(image dropped) = p_both + p_image, P(pose dropped) = p_both + p_pose."""
    if min(p_image, p_pose, p_both) < 0 or p_image + p_pose + p_both > 1:
        raise ConfigError(f"condition dropout probabilities must be ≥ 0 and sum to ≤ 1, got "
                          f"image={p_image}, pose={p_pose}, both={p_both}")
    u = jax.random.uniform(rng, (batch,))
    both = u < p_both
    image_only = (u >= p_both) & (u < p_both + p_image)
    pose_only = (u >= p_both + p_image) & (u < p_both + p_image + p_pose)
    return ~(both | image_only), ~(both | pose_only)


def dual_guidance_eps(eps_null: Array, eps_image: Array, eps_full: Array, *,
                      s_image: Any, s_pose: Any) -> Array:
    """ε(∅,∅) + s_I (ε(I,∅) − ε(∅,∅)) + s_p (ε(I,p) − ε(I,∅)) (shared guidance module)."""
    return guidance.multi_condition_eps([eps_null, eps_image, eps_full], [s_image, s_pose])


# ------------------------------------------------------------------------------ configs


def tiny_configs(size: str = "tiny") -> dict[str, Any]:
    """From-scratch configs. 'tiny': the synthetic demo (VAE ÷4, 2-level UNet, 1-layer CLIP
    on 32 px); 'micro': the smallest sensible model, for CPU tests."""
    if size == "micro":
        return {
            "vae": VAEConfig(block_out_channels=(8,), layers_per_block=1, latent_channels=4,
                             norm_num_groups=4, scaling_factor=1.0,
                             mid_block_add_attention=False),
            "unet": UNetConfig(in_channels=4, out_channels=4, block_out_channels=(16,),
                               down_block_types=("CrossAttnDownBlock2D",),
                               up_block_types=("CrossAttnUpBlock2D",), layers_per_block=1,
                               num_attention_heads=1, cross_attention_dim=8, norm_num_groups=4),
            "clip": CLIPVisionConfig(hidden_size=8, intermediate_size=16, projection_dim=8,
                                     num_hidden_layers=1, num_attention_heads=1, image_size=16,
                                     patch_size=8),
        }
    if size != "tiny":
        raise ConfigError(f"model.size {size!r}: use 'tiny' or 'micro'")
    return {
        "vae": VAEConfig(block_out_channels=(32, 64, 64), layers_per_block=1, latent_channels=4,
                         norm_num_groups=16, scaling_factor=1.0, mid_block_add_attention=False),
        "unet": UNetConfig(in_channels=4, out_channels=4, block_out_channels=(32, 64),
                           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                           layers_per_block=1, num_attention_heads=2, cross_attention_dim=32,
                           norm_num_groups=16),
        "clip": CLIPVisionConfig(hidden_size=32, intermediate_size=64, projection_dim=32,
                                 num_hidden_layers=1, num_attention_heads=2, image_size=32,
                                 patch_size=8),
    }


# ------------------------------------------------------------------------------ model


@dataclasses.dataclass
class DreamPoseModel:
    """The networks and SD's discrete schedule, as pure functions of a params dict
    {"unet", "adapter", "clip", "vae"}."""

    unet: UNet2DConditionModel   # in_channels = latent + 10
    vae: AutoencoderKL
    clip: CLIPVisionModelWithProjection
    schedule: DiscreteSchedule
    prediction_type: str = "epsilon"
    scaling_factor: float = 0.18215
    adapter: ImageConditionAdapter = dataclasses.field(default_factory=ImageConditionAdapter)

    def __post_init__(self):
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ConfigError(f"prediction_type {self.prediction_type!r}: use epsilon or "
                              "v_prediction")
        if self.clip.config.projection_dim != self.unet.config.cross_attention_dim:
            raise ConfigError(
                f"CLIP projection_dim {self.clip.config.projection_dim} != UNet "
                f"cross_attention_dim {self.unet.config.cross_attention_dim}: the adapter "
                "starts as the identity on CLIP tokens, so the widths must match (SD 1.x: a "
                "ViT-L/14 image encoder, 768)")

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def downsample_factor(self) -> int:
        return self.vae.config.downsample_factor

    # -------------------------------------------------------------- building
    @classmethod
    def from_configs(cls, *, unet: UNetConfig, vae: VAEConfig, clip: CLIPVisionConfig,
                     dtype: str = "float32", remat: bool = False,
                     attention_impl: str | None = None, **kw: Any) -> "DreamPoseModel":
        unet = dataclasses.replace(unet, in_channels=vae.latent_channels + POSE_CHANNELS)
        dt = runtime.compute_dtype(dtype)
        return cls(unet=UNet2DConditionModel(unet, dtype=dt, attention_impl=attention_impl,
                                             remat=remat),
                   vae=AutoencoderKL(vae, dtype=dt, remat=remat),
                   clip=CLIPVisionModelWithProjection(clip, dtype=dt),
                   schedule=kw.pop("schedule", None) or DiscreteSchedule.from_scheduler_config({}),
                   scaling_factor=float(vae.scaling_factor), **kw)

    @classmethod
    def from_pretrained(cls, sd_root: str, clip_root: str = "", *, dtype: str = "float32",
                        remat: bool = False, attention_impl: str | None = None
                        ) -> tuple["DreamPoseModel", dict[str, Any]]:
        """(model, params) from a diffusers SD folder (unet/, vae/, scheduler/) and a
        transformers CLIP vision folder with visual_projection (default <sd>/image_encoder).
        The UNet's conv_in is widened by 10 zero channels; the adapter is the identity."""
        from vdiff.models.sd.clip import load_clip_vision
        from vdiff.models.sd.unet import load_unet
        from vdiff.models.sd.vae import load_vae

        if not os.path.isdir(sd_root):
            raise ConfigError(f"Stable Diffusion folder not found: {sd_root!r} (a diffusers "
                              "folder with unet/ and vae/)")
        clip_root = clip_root or os.path.join(sd_root, "image_encoder")
        for path in (os.path.join(sd_root, "unet"), os.path.join(sd_root, "vae"), clip_root):
            if not os.path.isdir(path):
                raise ConfigError(f"missing weights folder {path}: DreamPose needs the SD "
                                  "UNet and VAE and a CLIP vision encoder with projection "
                                  "(pass dreampose.clip=PATH)")
        dt = runtime.compute_dtype(dtype)
        unet, unet_params = load_unet(os.path.join(sd_root, "unet"), dtype=dt,
                                      attention_impl=attention_impl, remat=remat)
        vae, vae_params = load_vae(os.path.join(sd_root, "vae"), dtype=dt)
        clip, clip_params = load_clip_vision(clip_root, dtype=dt, with_projection=True)
        sched = load_scheduler_config(sd_root)
        model = cls(
            unet=UNet2DConditionModel(
                dataclasses.replace(unet.config,
                                    in_channels=unet.config.in_channels + POSE_CHANNELS),
                dtype=dt, attention_impl=attention_impl, remat=remat),
            vae=vae, clip=clip, schedule=DiscreteSchedule.from_scheduler_config(sched),
            prediction_type=sched.get("prediction_type", "epsilon"),
            scaling_factor=float(vae.config.scaling_factor))
        params = {"unet": widen_input_channels(unet_params, POSE_CHANNELS),
                  "vae": vae_params, "clip": clip_params}
        params["adapter"] = model.init_adapter(jax.random.key(0), vae.config.downsample_factor)
        return model, params

    def init_adapter(self, rng: Array, factor: int) -> Any:
        c = self.clip.config
        tokens = jnp.zeros((1, c.num_positions, c.projection_dim))
        lat = jnp.zeros((1, 2, 2, self.latent_channels))
        del factor
        return self.adapter.init(rng, tokens, lat)["params"]

    def init(self, rng: Array, image_size: int) -> dict[str, Any]:
        """Random params of every part (for from-scratch tiny models and shapes)."""
        r_u, r_v, r_c, r_a = jax.random.split(rng, 4)
        f = self.downsample_factor
        if image_size % (f * self.unet.config.down_factor):
            raise ConfigError(f"image size {image_size} must be a multiple of "
                              f"{f * self.unet.config.down_factor} (VAE ÷{f} × UNet "
                              f"÷{self.unet.config.down_factor})")
        lat = image_size // f
        c = self.clip.config
        return {
            "unet": self.unet.init(r_u, jnp.zeros((1, lat, lat, self.unet.config.in_channels)),
                                   jnp.zeros((1,)),
                                   jnp.zeros((1, c.num_positions, c.projection_dim)))["params"],
            "vae": self.vae.init(r_v, jnp.zeros((1, image_size, image_size, 3)))["params"],
            "clip": self.clip.init(r_c, jnp.zeros((1, c.image_size, c.image_size, 3)))["params"],
            "adapter": self.init_adapter(r_a, f),
        }

    # -------------------------------------------------------------- pieces
    def encode(self, params: Any, images: Array, rng: Array | None = None) -> Array:
        """Images [B, H, W, 3] in [−1, 1] → scaled latents (posterior mean unless rng)."""
        mean, logvar = self.vae.apply({"params": params["vae"]}, images, method=self.vae.encode)
        z = mean if rng is None else sample_latent(rng, mean, logvar)
        return z * self.scaling_factor

    def decode(self, params: Any, latents: Array) -> Array:
        x = self.vae.apply({"params": params["vae"]}, latents / self.scaling_factor,
                           method=self.vae.decode)
        return jnp.clip(x, -1.0, 1.0)

    def clip_tokens(self, params: Any, images: Array) -> Array:
        """[B, 1 + P, projection_dim]: W_proj · post_LN(last_hidden_state), every token."""
        c = self.clip.config
        out = self.clip.apply({"params": params["clip"]}, clip_preprocess(images, c.image_size))
        p = params["clip"]
        ln = p["vision_model"]["post_layernorm"]
        h = out.last_hidden_state.astype(jnp.float32)
        mu = jnp.mean(h, -1, keepdims=True)
        var = jnp.mean(jnp.square(h - mu), -1, keepdims=True)
        h = (h - mu) * jax.lax.rsqrt(var + c.layer_norm_eps) * ln["scale"] + ln["bias"]
        return h @ p["visual_projection"]["kernel"].astype(jnp.float32)

    def image_context(self, params: Any, images: Array, *, latents: Array | None = None
                      ) -> Array:
        """The cross-attention context of subject images (adapter over CLIP + VAE)."""
        if latents is None:
            latents = self.encode(params, images)
        tokens = self.clip_tokens(params, images)
        return self.adapter.apply({"params": params["adapter"]}, tokens, latents)

    def pose_to_latent(self, pose: Array, latent_hw: tuple[int, int]) -> Array:
        """[B, H, W, 10] pose windows → the latent grid (area average)."""
        b, _, _, c = pose.shape
        if c != POSE_CHANNELS:
            raise ConfigError(f"pose input has {c} channels; DreamPose takes {POSE_CHANNELS} "
                              f"(5 frames × 2)")
        return jax.image.resize(pose.astype(jnp.float32), (b, *latent_hw, c), method="linear",
                                antialias=True)

    def unet_out(self, params: Any, z: Array, timesteps: Array, context: Array,
                 pose_latent: Array) -> Array:
        x = jnp.concatenate([z, pose_latent.astype(z.dtype)], axis=-1)
        return self.unet.apply({"params": params["unet"]}, x, timesteps, context)

    def eps(self, params: Any, z: Array, logsnr: Array, context: Array,
            pose_latent: Array) -> Array:
        logsnr = jnp.broadcast_to(logsnr, z.shape[:1])
        out = self.unet_out(params, z, self.schedule.timestep(logsnr), context, pose_latent)
        if self.prediction_type == "v_prediction":
            out = targets.eps_from_v(z=z, v=out, logsnr=logsnr)
        return out.astype(z.dtype)

    def guided_eps(self, params: Any, z: Array, logsnr: Array, context: Array,
                   pose_latent: Array, *, s_image: Any, s_pose: Any) -> Array:
        """Dual CFG, the three predictions in one 3×-batch network call."""
        b = z.shape[0]
        zc, zp = jnp.zeros_like(context), jnp.zeros_like(pose_latent)
        eps = self.eps(params, jnp.concatenate([z, z, z]),
                       jnp.concatenate([jnp.broadcast_to(logsnr, (b,))] * 3),
                       jnp.concatenate([zc, context, context]),
                       jnp.concatenate([zp, zp, pose_latent]))
        e_null, e_image, e_full = jnp.split(eps, 3)
        return dual_guidance_eps(e_null, e_image, e_full, s_image=s_image, s_pose=s_pose)

    def denoiser(self, params: Any, context: Array, pose_latent: Array, *, s_image: Any,
                 s_pose: Any):
        """`denoise_fn(z, logsnr) -> x̂0` for the shared samplers."""

        def fn(z: Array, logsnr: Array) -> Array:
            eps = self.guided_eps(params, z, logsnr, context, pose_latent,
                                  s_image=s_image, s_pose=s_pose)
            return targets.x0_from_eps(z=z, eps=eps, logsnr=logsnr)

        return fn

    def training_target(self, x0: Array, eps: Array, logsnr: Array) -> Array:
        if self.prediction_type == "v_prediction":
            return targets.v_from(x0=x0, eps=eps, logsnr=logsnr)
        return eps


def as_numpy_tree(tree: Any) -> Any:
    return jax.tree.map(np.asarray, tree)
