"""Stable Diffusion 1.x conditional UNet (diffusers' `UNet2DConditionModel`) in linen.

Channels-last throughout: latents [B, H, W, C] in, noise prediction [B, H, W, C] out.
Every linen module is named after its PyTorch counterpart ("down_blocks.1" holding
"resnets.0", "attentions.0", "downsamplers.0"), so `convert.convert_state_dict` maps a
diffusers safetensors checkpoint onto the params without a hand-written table.

This module holds the model and its loading; the config lives in `unet_config.py`, the
layers (ResNet, Transformer2D, resamplers, the timestep embedding) in `unet_layers.py`, and
the down / mid / up blocks and the encoder half in `unet_blocks.py`. The encoder half is
shared with `controlnet.py`, whose encoder is the same network under the same names.

Supported: the SD 1.x / 2.x feature set — `DownBlock2D` / `CrossAttnDownBlock2D`,
`UNetMidBlock2DCrossAttn`, `UpBlock2D` / `CrossAttnUpBlock2D`, GEGLU feed-forward,
`use_linear_projection` either way, `attention_head_dim` as diffusers reads it (the
number of heads per block), `transformer_layers_per_block`, `upcast_attention`.
Anything else a config names with a non-default value raises `ConfigError`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vdiff.models.sd import convert
from vdiff.models.sd.unet_blocks import UpBlock, embed_timesteps, encode, middle
from vdiff.models.sd.unet_config import (
    DOWN_BLOCK_TYPES,
    UP_BLOCK_TYPES,
    Array,
    Dtype,
    EncoderConfig,
    Numerics,
    UNetConfig,
    check_config_keys,
    numerics_for,
)
from vdiff.models.sd.unet_layers import conv, group_norm

__all__ = [
    "Array",
    "DOWN_BLOCK_TYPES",
    "Dtype",
    "EncoderConfig",
    "Numerics",
    "UNet2DConditionModel",
    "UNetConfig",
    "UP_BLOCK_TYPES",
    "add_residuals",
    "check_config_keys",
    "conv",
    "embed_timesteps",
    "encode",
    "example_inputs",
    "load_unet",
    "middle",
    "numerics_for",
    "param_shapes",
    "widen_input_channels",
]


class UNet2DConditionModel(nn.Module):
    """SD 1.x's text-conditioned UNet: NHWC latents, timesteps, text tokens → NHWC output.

    dtype: compute dtype (e.g. bf16); params stay float32 and norm statistics are
      computed in float32. The output is float32.
    attention_impl: None (XLA) or "cudnn", for `jax.nn.dot_product_attention`.
    remat: rematerialise every ResNet and Transformer2D block in the backward pass.
    """

    config: UNetConfig
    dtype: Dtype = jnp.float32
    attention_impl: str | None = None
    remat: bool = False

    @nn.compact
    def __call__(self, sample: Array, timesteps: Array | float, encoder_hidden_states: Array,
                 *, down_block_additional_residuals: Sequence[Array] | None = None,
                 mid_block_additional_residual: Array | None = None) -> Array:
        """sample [B, H, W, in_channels]; timesteps [B] or scalar; encoder_hidden_states
        [B, L, cross_attention_dim]. The additional residuals (a ControlNet's outputs) are
        added to the skips and to the mid-block output."""
        cfg, dt = self.config, self.dtype
        num = numerics_for(cfg, dt, self.attention_impl, self.remat)
        x = sample.astype(dt)
        if cfg.center_input_sample:
            x = 2 * x - 1.0
        temb = embed_timesteps(cfg, timesteps, x.shape[0], dt)
        context = encoder_hidden_states.astype(dt)

        x = conv(cfg.block_out_channels[0], "conv_in", dt)(x)
        x, skips = encode(cfg, num, x, temb, context)
        if down_block_additional_residuals is not None:
            skips = add_residuals(skips, down_block_additional_residuals)
        x = middle(cfg, num, x, temb, context)
        if mid_block_additional_residual is not None:
            x = x + mid_block_additional_residual.astype(x.dtype)

        x = self._decode(cfg, num, x, skips, temb, context)
        x = nn.silu(group_norm(x, groups=cfg.norm_num_groups, eps=cfg.norm_eps,
                               name="conv_norm_out", dtype=dt))
        return conv(cfg.out_channels, "conv_out", dt)(x).astype(jnp.float32)

    @staticmethod
    def _decode(cfg: UNetConfig, num: Numerics, x: Array, skips: tuple[Array, ...],
                temb: Array, context: Array) -> Array:
        """The up blocks ("up_blocks.i"), each consuming its skips from the end of the
        list and upsampling to the next skip's size (diffusers' `upsample_size`)."""
        n = len(cfg.block_out_channels)
        rev = lambda t: tuple(reversed(t))  # noqa: E731
        layers, heads = rev(cfg.layers_per_block), rev(cfg.num_attention_heads)
        tlayers, channels = rev(cfg.transformer_layers_per_block), rev(cfg.block_out_channels)
        for i, kind in enumerate(cfg.up_block_types):
            k = layers[i] + 1
            block_skips, skips = skips[-k:], skips[:-k]
            last = i == n - 1
            x = UpBlock(out_channels=channels[i], num_layers=k,
                        cross_attention=kind == "CrossAttnUpBlock2D", heads=heads[i],
                        transformer_layers=tlayers[i], add_upsample=not last, num=num,
                        name=f"up_blocks.{i}")(
                x, block_skips, temb, context,
                None if last else tuple(skips[-1].shape[1:3]))
        return x


def add_residuals(skips: Sequence[Array], residuals: Sequence[Array]) -> tuple[Array, ...]:
    """skips + a ControlNet's down residuals, one for one."""
    if len(residuals) != len(skips):
        raise ValueError(f"down_block_additional_residuals has {len(residuals)} tensors; "
                         f"this UNet has {len(skips)} skip connections")
    return tuple(s + r.astype(s.dtype) for s, r in zip(skips, residuals))


# ---------------------------------------------------------------------------- loading


def example_inputs(config: EncoderConfig, batch: int = 1) -> tuple[Array, Array, Array]:
    """Smallest sensible (latents, timesteps, text tokens) to trace or init a model."""
    s = config.down_factor
    return (jnp.zeros((batch, s, s, config.in_channels), jnp.float32),
            jnp.zeros((batch,), jnp.float32),
            jnp.zeros((batch, 1, config.cross_attention_dim), jnp.float32))


def load_unet(folder: str, *, dtype: Dtype = jnp.float32, attention_impl: str | None = None,
              remat: bool = False) -> tuple[UNet2DConditionModel, dict]:
    """A diffusers-layout UNet folder (config.json + safetensors) → (module, params).

    Params are float32 jax arrays in a plain dict (the compute dtype is the module's).
    Raises ConfigError for unsupported configs and WeightConversionError (naming
    every missing, unexpected and mis-shaped tensor) when the weights do not fit.
    """
    config = UNetConfig.from_diffusers_config(convert.load_config(folder))
    state = convert.load_state_dict(folder)  # before tracing: fail fast on bad files
    module = UNet2DConditionModel(config, dtype=dtype, attention_impl=attention_impl,
                                  remat=remat)
    params = convert.convert_state_dict(state, param_shapes(module), what="UNet")
    return module, jax.tree_util.tree_map(jnp.asarray, params)


def param_shapes(module: UNet2DConditionModel) -> Any:
    """The params tree as ShapeDtypeStructs (traced, nothing computed)."""
    return jax.eval_shape(module.init, jax.random.key(0),
                          *example_inputs(module.config))["params"]


def widen_input_channels(params: Mapping[str, Any], extra: int) -> dict:
    """params with `extra` zero-initialised input channels appended to conv_in.

    The new channels' weights are zero, so the output is unchanged whatever values the
    new channels carry — fine-tuning (DreamPose's 10 pose channels) starts from the
    pretrained model. The same module applies: linen infers conv_in's input width; use
    `dataclasses.replace(config, in_channels=…)` only where you init from the config.
    """
    if extra < 0:
        raise ValueError(f"extra must be >= 0, got {extra}")
    conv_in = dict(params["conv_in"])
    kernel = conv_in["kernel"]
    xp = np if isinstance(kernel, np.ndarray) else jnp
    zeros = xp.zeros(kernel.shape[:2] + (extra,) + kernel.shape[3:], kernel.dtype)
    conv_in["kernel"] = xp.concatenate([kernel, zeros], axis=2)
    return {**params, "conv_in": conv_in}
