"""The Stable Diffusion UNet's down, mid and up blocks, and the encoder half built from them
that the UNet and the ControlNet share (time embedding, down blocks, mid block)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from vdiff.models.sd.unet_config import Array, Dtype, EncoderConfig, Numerics
from vdiff.models.sd.unet_layers import (
    Downsample2D, TimestepEmbedding, Upsample2D, resnet, timestep_embedding, transformer)


class DownBlock(nn.Module):
    """DownBlock2D / CrossAttnDownBlock2D: (resnet [→ transformer]) × num_layers, then
    an optional stride-2 conv. Returns the output and every intermediate (the skips)."""

    out_channels: int
    num_layers: int
    cross_attention: bool
    heads: int
    transformer_layers: int
    add_downsample: bool
    downsample_padding: int
    num: Numerics

    @nn.compact
    def __call__(self, x: Array, temb: Array, context: Array) -> tuple[Array, tuple[Array, ...]]:
        skips = []
        for i in range(self.num_layers):
            x = resnet(self.num, self.out_channels, f"resnets.{i}")(x, temb)
            if self.cross_attention:
                x = transformer(self.num, self.heads, self.transformer_layers,
                                f"attentions.{i}")(x, context)
            skips.append(x)
        if self.add_downsample:
            x = Downsample2D(self.downsample_padding, self.num.dtype, name="downsamplers.0")(x)
            skips.append(x)
        return x, tuple(skips)


class MidBlock(nn.Module):
    """UNetMidBlock2DCrossAttn: resnets.0 → attentions.0 → resnets.1."""

    heads: int
    transformer_layers: int
    output_scale_factor: float
    num: Numerics

    @nn.compact
    def __call__(self, x: Array, temb: Array, context: Array) -> Array:
        c, n = x.shape[-1], self.num
        x = resnet(n, c, "resnets.0", self.output_scale_factor)(x, temb)
        x = transformer(n, self.heads, self.transformer_layers, "attentions.0")(x, context)
        return resnet(n, c, "resnets.1", self.output_scale_factor)(x, temb)


class UpBlock(nn.Module):
    """UpBlock2D / CrossAttnUpBlock2D: (concat a skip → resnet [→ transformer]) ×
    num_layers, skips taken last-first, then an optional upsample to `upsample_size`."""

    out_channels: int
    num_layers: int
    cross_attention: bool
    heads: int
    transformer_layers: int
    add_upsample: bool
    num: Numerics

    @nn.compact
    def __call__(self, x: Array, skips: Sequence[Array], temb: Array, context: Array,
                 upsample_size: tuple[int, int] | None) -> Array:
        if len(skips) != self.num_layers:
            raise ValueError(f"up block needs {self.num_layers} skips, got {len(skips)}")
        for i in range(self.num_layers):
            x = jnp.concatenate([x, skips[-1 - i].astype(x.dtype)], axis=-1)
            x = resnet(self.num, self.out_channels, f"resnets.{i}")(x, temb)
            if self.cross_attention:
                x = transformer(self.num, self.heads, self.transformer_layers,
                                f"attentions.{i}")(x, context)
        if self.add_upsample:
            x = Upsample2D(self.num.dtype, name="upsamplers.0")(x, upsample_size)
        return x


# ---------------------------------------------------------------- shared model halves
# These create named submodules in the calling module's compact context, so the UNet
# and the ControlNet both get top-level "time_embedding", "down_blocks.i", "mid_block".


def embed_timesteps(config: EncoderConfig, timesteps: Array | float, batch: int,
                    dtype: Dtype) -> Array:
    """Timesteps (scalar or [B]) → the blocks' conditioning vector [B, 4·C0]
    (submodule "time_embedding")."""
    t = jnp.broadcast_to(jnp.asarray(timesteps, jnp.float32).reshape(-1), (batch,))
    t_emb = timestep_embedding(t, config.block_out_channels[0],
                               flip_sin_to_cos=config.flip_sin_to_cos,
                               freq_shift=config.freq_shift)
    return TimestepEmbedding(config.time_embed_dim, dtype, name="time_embedding")(
        t_emb.astype(dtype))


def encode(config: EncoderConfig, num: Numerics, x: Array, temb: Array,
           context: Array) -> tuple[Array, tuple[Array, ...]]:
    """The down blocks ("down_blocks.i") after conv_in. Returns the output and the skip
    tensors, starting with `x` itself (the conv_in output), as diffusers orders them."""
    skips = [x]
    n = len(config.block_out_channels)
    for i, kind in enumerate(config.down_block_types):
        x, block_skips = DownBlock(
            out_channels=config.block_out_channels[i],
            num_layers=config.layers_per_block[i],
            cross_attention=kind == "CrossAttnDownBlock2D",
            heads=config.num_attention_heads[i],
            transformer_layers=config.transformer_layers_per_block[i],
            add_downsample=i < n - 1,
            downsample_padding=config.downsample_padding,
            num=num, name=f"down_blocks.{i}")(x, temb, context)
        skips.extend(block_skips)
    return x, tuple(skips)


def middle(config: EncoderConfig, num: Numerics, x: Array, temb: Array,
           context: Array) -> Array:
    """The mid block ("mid_block")."""
    return MidBlock(config.num_attention_heads[-1], config.transformer_layers_per_block[-1],
                    config.mid_block_scale_factor, num, name="mid_block")(x, temb, context)
