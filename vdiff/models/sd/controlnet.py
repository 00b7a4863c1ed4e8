"""ControlNet (diffusers' `ControlNetModel`) for the SD 1.x UNet, in linen.

A trainable copy of the UNet's encoder half (conv_in, time embedding, down blocks, mid
block — built by the same functions as in `unet_blocks.py`, under the same names) that
also sees a conditioning image through a small conv stack, and returns one zero-initialised
1×1 conv output per UNet skip connection plus one for the mid block. Those residuals
go into `UNet2DConditionModel(…, down_block_additional_residuals=…,
mid_block_additional_residual=…)`.

Channels-last: latents [B, H, W, C], conditioning image [B, H·f, W·f, 3] where f is
2^(len(conditioning_embedding_out_channels) − 1) (8 for SD: 512² images, 64² latents).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vdiff.errors import ConfigError
from vdiff.models.sd import convert
from vdiff.models.sd.unet import example_inputs
from vdiff.models.sd.unet_blocks import embed_timesteps, encode, middle
from vdiff.models.sd.unet_config import (
    _COMMON_KEYS, Array, Dtype, EncoderConfig, UNetConfig, check_config_keys, numerics_for)
from vdiff.models.sd.unet_layers import conv

# The parts of a ControlNet that are copies of UNet parts (same names, same shapes).
SHARED_WITH_UNET = ("conv_in", "time_embedding", "down_blocks.", "mid_block")


@dataclasses.dataclass(frozen=True)
class ControlNetConfig(EncoderConfig):
    """The encoder fields (see `EncoderConfig`) plus the conditioning path's."""

    conditioning_channels: int = 3
    conditioning_embedding_out_channels: tuple[int, ...] = (16, 32, 96, 256)
    controlnet_conditioning_channel_order: str = "rgb"
    global_pool_conditions: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "conditioning_embedding_out_channels",
                           tuple(self.conditioning_embedding_out_channels))
        if not self.conditioning_embedding_out_channels:
            raise ConfigError("conditioning_embedding_out_channels must not be empty")
        if self.controlnet_conditioning_channel_order not in ("rgb", "bgr"):
            raise ConfigError("controlnet_conditioning_channel_order must be 'rgb' or 'bgr', "
                              f"got {self.controlnet_conditioning_channel_order!r}")

    @property
    def cond_factor(self) -> int:
        """How much larger the conditioning image is than the latents."""
        return 2 ** (len(self.conditioning_embedding_out_channels) - 1)

    @classmethod
    def from_diffusers_config(cls, d: Mapping[str, Any]) -> "ControlNetConfig":
        """From a diffusers `ControlNetModel` config.json dict; raises ConfigError naming
        any feature this port does not implement."""
        extra = {"conditioning_channels", "conditioning_embedding_out_channels",
                 "controlnet_conditioning_channel_order", "global_pool_conditions"}
        check_config_keys(d, _COMMON_KEYS | extra, "ControlNet")
        return cls(**cls._common_from_diffusers(d),
                   conditioning_channels=d.get("conditioning_channels", 3),
                   conditioning_embedding_out_channels=tuple(
                       d.get("conditioning_embedding_out_channels") or (16, 32, 96, 256)),
                   controlnet_conditioning_channel_order=d.get(
                       "controlnet_conditioning_channel_order", "rgb"),
                   global_pool_conditions=bool(d.get("global_pool_conditions", False)))

    @classmethod
    def from_unet_config(cls, unet: EncoderConfig, **overrides: Any) -> "ControlNetConfig":
        """The ControlNet for a UNet: its encoder fields, plus `overrides`."""
        shared = {f.name: getattr(unet, f.name) for f in dataclasses.fields(EncoderConfig)}
        return cls(**{**shared, **overrides})


class ControlNetConditioningEmbedding(nn.Module):
    """conv_in → SiLU → (3×3 conv → SiLU → stride-2 conv → SiLU) per width step →
    zero-initialised conv_out: the conditioning image down to latent size and width."""

    out_channels: int
    block_out_channels: tuple[int, ...]
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, cond: Array) -> Array:
        widths, dt = self.block_out_channels, self.dtype
        h = nn.silu(conv(widths[0], "conv_in", dt)(cond.astype(dt)))
        for i in range(len(widths) - 1):
            h = nn.silu(conv(widths[i], f"blocks.{2 * i}", dt)(h))
            h = nn.silu(conv(widths[i + 1], f"blocks.{2 * i + 1}", dt, stride=2)(h))
        return conv(self.out_channels, "conv_out", dt, zero_init=True)(h)


class ControlNetModel(nn.Module):
    """Latents, timesteps, text tokens and a conditioning image → (down residuals, mid
    residual), both scaled by `conditioning_scale`, in the compute dtype.

    dtype / attention_impl / remat: as for `UNet2DConditionModel`.
    """

    config: ControlNetConfig
    dtype: Dtype = jnp.float32
    attention_impl: str | None = None
    remat: bool = False

    @nn.compact
    def __call__(self, sample: Array, timesteps: Array | float, encoder_hidden_states: Array,
                 controlnet_cond: Array, *, conditioning_scale: float | Array = 1.0,
                 guess_mode: bool = False) -> tuple[tuple[Array, ...], Array]:
        """guess_mode: scale the residuals from 0.1 (shallowest) to 1.0 (mid block)
        log-uniformly, as diffusers does for prompt-free control."""
        cfg, dt = self.config, self.dtype
        num = numerics_for(cfg, dt, self.attention_impl, self.remat)
        x = sample.astype(dt)
        temb = embed_timesteps(cfg, timesteps, x.shape[0], dt)
        context = encoder_hidden_states.astype(dt)
        if cfg.controlnet_conditioning_channel_order == "bgr":
            controlnet_cond = controlnet_cond[..., ::-1]

        x = conv(cfg.block_out_channels[0], "conv_in", dt)(x)
        x = x + ControlNetConditioningEmbedding(
            cfg.block_out_channels[0], cfg.conditioning_embedding_out_channels, dt,
            name="controlnet_cond_embedding")(controlnet_cond)
        x, skips = encode(cfg, num, x, temb, context)
        x = middle(cfg, num, x, temb, context)

        down = [conv(s.shape[-1], f"controlnet_down_blocks.{i}", dt, kernel=1,
                     zero_init=True)(s) for i, s in enumerate(skips)]
        mid = conv(x.shape[-1], "controlnet_mid_block", dt, kernel=1, zero_init=True)(x)

        if guess_mode and not cfg.global_pool_conditions:
            scales = jnp.logspace(-1.0, 0.0, len(down) + 1) * conditioning_scale
        else:
            scales = jnp.full((len(down) + 1,), conditioning_scale, jnp.float32)
        scales = scales.astype(dt)
        down = [d * scales[i] for i, d in enumerate(down)]
        mid = mid * scales[-1]
        if cfg.global_pool_conditions:
            down = [jnp.mean(d, axis=(1, 2), keepdims=True) for d in down]
            mid = jnp.mean(mid, axis=(1, 2), keepdims=True)
        return tuple(down), mid


def _example_cond(config: ControlNetConfig, batch: int = 1) -> Array:
    s = config.down_factor * config.cond_factor
    return jnp.zeros((batch, s, s, config.conditioning_channels), jnp.float32)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """{"a/b/kernel": shape} of a params subtree, comparable across dict kinds."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(np.shape(leaf))
            for path, leaf in flat}


def param_shapes(module: ControlNetModel) -> Any:
    """The params tree as ShapeDtypeStructs (traced, nothing computed)."""
    cfg = module.config
    return jax.eval_shape(module.init, jax.random.key(0), *example_inputs(cfg),
                          _example_cond(cfg))["params"]


def load_controlnet(folder: str, *, dtype: Dtype = jnp.float32,
                    attention_impl: str | None = None,
                    remat: bool = False) -> tuple[ControlNetModel, dict]:
    """A diffusers-layout ControlNet folder (config.json + safetensors) → (module, params),
    float32 params. Errors as `load_unet`'s."""
    config = ControlNetConfig.from_diffusers_config(convert.load_config(folder))
    state = convert.load_state_dict(folder)  # before tracing: fail fast on bad files
    module = ControlNetModel(config, dtype=dtype, attention_impl=attention_impl, remat=remat)
    params = convert.convert_state_dict(state, param_shapes(module), what="ControlNet")
    return module, jax.tree_util.tree_map(jnp.asarray, params)


def controlnet_from_unet(unet_params: Mapping[str, Any], unet_config: UNetConfig, *,
                         rng: jax.Array | None = None, conditioning_channels: int = 3,
                         conditioning_embedding_out_channels: tuple[int, ...] = (16, 32, 96, 256),
                         controlnet_conditioning_channel_order: str = "rgb",
                         dtype: Dtype = jnp.float32, attention_impl: str | None = None,
                         remat: bool = False) -> tuple[ControlNetModel, dict]:
    """A new ControlNet for a UNet, as diffusers' `ControlNetModel.from_unet`: conv_in,
    time embedding, down blocks and mid block copied from `unet_params`; the
    conditioning stack freshly initialised from `rng` (its conv_out zero) and every
    controlnet_* 1×1 conv zero, so the untrained ControlNet leaves the UNet unchanged.

    The input width is read from unet_params' conv_in, so a UNet widened with
    `widen_input_channels` gets a matching ControlNet.
    """
    in_channels = int(np.shape(unet_params["conv_in"]["kernel"])[2])
    config = ControlNetConfig.from_unet_config(
        unet_config, in_channels=in_channels, conditioning_channels=conditioning_channels,
        conditioning_embedding_out_channels=tuple(conditioning_embedding_out_channels),
        controlnet_conditioning_channel_order=controlnet_conditioning_channel_order)
    module = ControlNetModel(config, dtype=dtype, attention_impl=attention_impl, remat=remat)
    shapes = param_shapes(module)

    embedding = ControlNetConditioningEmbedding(
        config.block_out_channels[0], config.conditioning_embedding_out_channels)
    rng = jax.random.key(0) if rng is None else rng
    cond_params = embedding.init(rng, _example_cond(config))["params"]

    params, wrong = {}, []
    for name, subtree in shapes.items():
        if name == "controlnet_cond_embedding":
            params[name] = cond_params
        elif name.startswith(SHARED_WITH_UNET):
            if name not in unet_params:
                wrong.append(f"{name} (missing from the UNet params)")
                continue
            params[name] = jax.tree_util.tree_map(jnp.array, dict(unet_params[name]))
            if _shapes(params[name]) != _shapes(subtree):
                wrong.append(f"{name} (UNet shapes do not match unet_config)")
        else:  # controlnet_down_blocks.i, controlnet_mid_block
            params[name] = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), subtree)
    if wrong:
        raise convert.WeightConversionError(
            "controlnet_from_unet: the UNet params do not fit unet_config: " + ", ".join(wrong))
    return module, params
