"""VDM's factorized space-time UNet (Ho et al. 2022, arXiv 2204.03458).

A 2D image UNet lifted to video: 3×3 convolutions become 1×3×3 (space only),
each attention block is spatial attention within frames followed by temporal
attention across frames, and down/upsampling acts on space only. Frames are
independent everywhere except in temporal attention, so masking temporal
attention is enough to train on images and videos jointly.

    out = UNet3D(...).apply(params, z, logsnr, labels=..., frame_is_image=..., train=...)

z: [B, F, H, W, C]; logsnr: [B] (or [B, F]); labels: int [B] or [B, F] with
`num_classes` as the null class; frame_is_image: bool [B, F]; cond: optional
[B, F, H, W, C'] concatenated to z channel-wise before the first convolution (the
upsampled low-resolution video of a cascaded super-resolution stage).

`remat` trades compute for memory per res/attention block: 'none' keeps every activation
for the backward pass; 'dots' keeps only convolution and matmul outputs and recomputes
the norms, activations and dropout; 'full' keeps only each block's input. Parameters are
the same in all three, so checkpoints are interchangeable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vdiff.nn import partitioning as P
from vdiff.nn.attention import SpatialAttention, TemporalAttention
from vdiff.nn.embeddings import ConditioningEmbedding
from vdiff.nn.layers import Downsample, FrameGroupNorm, ResBlock, SpatialConv, Upsample


REMAT_POLICIES = {"none": None, "dots": jax.checkpoint_policies.dots_saveable,
                  "full": jax.checkpoint_policies.nothing_saveable}


def remat_block(cls, remat: str, static_argnums: tuple[int, ...] = ()):
    """`cls` wrapped in `nn.remat` with the named policy (see the module docstring)."""
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat {remat!r} not in {sorted(REMAT_POLICIES)}")
    if remat == "none":
        return cls
    return nn.remat(cls, policy=REMAT_POLICIES[remat], static_argnums=static_argnums)


class SpaceTimeAttention(nn.Module):
    """Spatial attention (optional) then temporal attention (optional)."""

    spatial: bool
    temporal: bool
    head_dim: int
    max_relative_distance: int
    spatial_impl: str | None
    temporal_impl: str | None
    dtype: Any

    @nn.compact
    def __call__(self, x, frame_is_image):
        if self.spatial:
            x = SpatialAttention(self.head_dim, self.spatial_impl, self.dtype)(x)
        if self.temporal:
            x = TemporalAttention(self.head_dim, self.max_relative_distance,
                                  self.temporal_impl, self.dtype)(x, frame_is_image)
        return x


class UNet3D(nn.Module):
    """Factorized space-time UNet; see the module docstring for the call signature."""

    out_channels: int
    base_channels: int = 64
    channel_mults: Sequence[int] = (1, 2, 4, 8)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (32, 16, 8)
    temporal_attn_resolutions: Sequence[int] | None = None  # None: same as attn_resolutions
    head_dim: int = 64
    dropout: float = 0.0
    num_classes: int = 0
    max_relative_distance: int = 32
    spatial_attention_impl: str | None = None  # None/'xla' or 'cudnn'
    temporal_attention_impl: str | None = None
    dtype: Any = jnp.float32
    remat: str = "none"  # 'none' | 'dots' | 'full' (module docstring)
    # GroupNorm → (FiLM) → SiLU as one Pallas kernel: 'off' | 'on' | 'interpret'
    # (vdiff.runtime.fused_norm; same parameters either way)
    fused_norm: str = "off"

    def _space_time_attention(self, spatial: bool, temporal: bool, name: str) -> nn.Module:
        return remat_block(SpaceTimeAttention, self.remat)(
            spatial, temporal, self.head_dim, self.max_relative_distance,
            self.spatial_attention_impl, self.temporal_attention_impl, self.dtype, name=name)

    def _res_block(self, features: int, name: str) -> nn.Module:
        # train (argument 3, counting self) is a Python bool: static under remat
        return remat_block(ResBlock, self.remat, static_argnums=(3,))(
            features, self.dropout, self.dtype, self.fused_norm, name=name)

    @nn.compact
    def __call__(self, z, logsnr, *, labels=None, frame_is_image=None, cond=None,
                 train: bool = False):
        if z.ndim != 5:
            raise ValueError(f"UNet3D expects [B, F, H, W, C] input, got shape {z.shape}")
        size = z.shape[2]
        if z.shape[2] % 2 ** (len(self.channel_mults) - 1) or z.shape[3] % 2 ** (len(self.channel_mults) - 1):
            raise ValueError(f"H, W = {z.shape[2:4]} must be divisible by "
                             f"2**{len(self.channel_mults) - 1} for {len(self.channel_mults)} levels")
        emb_dim = 4 * self.base_channels
        with jax.named_scope("conditioning"):
            emb = ConditioningEmbedding(emb_dim, self.num_classes, self.dtype)(
                logsnr, labels, z.shape[1])

        x = z if cond is None else jnp.concatenate([z, cond.astype(z.dtype)], axis=-1)
        h = SpatialConv(self.base_channels, dtype=self.dtype, name="conv_in")(
            P.constrain_video(x.astype(self.dtype)))
        skips = [h]
        # Explicit names, numbered like flax's automatic ones: with remat the wrapped
        # classes would otherwise be auto-named 'CheckpointResBlock_0', … (other params).
        counts = {"ResBlock": 0, "SpaceTimeAttention": 0}

        def name(kind: str) -> str:
            counts[kind] += 1
            return f"{kind}_{counts[kind] - 1}"

        def attention(size: int) -> nn.Module | None:
            temporal_res = (self.attn_resolutions if self.temporal_attn_resolutions is None
                            else self.temporal_attn_resolutions)
            spatial, temporal = size in self.attn_resolutions, size in temporal_res
            if not (spatial or temporal):
                return None
            return self._space_time_attention(spatial, temporal, name("SpaceTimeAttention"))

        for level, mult in enumerate(self.channel_mults):
            with jax.named_scope(f"down_{level}"):
                for _ in range(self.num_res_blocks):
                    h = self._res_block(self.base_channels * mult, name("ResBlock"))(
                        h, emb, train)
                    if (attn := attention(size)) is not None:
                        h = attn(h, frame_is_image)
                    skips.append(h)
                if level != len(self.channel_mults) - 1:
                    h = Downsample(self.dtype)(h)
                    size //= 2
                    skips.append(h)

        with jax.named_scope("middle"):
            h = self._res_block(h.shape[-1], name("ResBlock"))(h, emb, train)
            h = self._space_time_attention(True, True, name("SpaceTimeAttention"))(
                h, frame_is_image)
            h = self._res_block(h.shape[-1], name("ResBlock"))(h, emb, train)

        for level, mult in reversed(list(enumerate(self.channel_mults))):
            with jax.named_scope(f"up_{level}"):
                for _ in range(self.num_res_blocks + 1):
                    h = jnp.concatenate([h, skips.pop()], axis=-1)
                    h = self._res_block(self.base_channels * mult, name("ResBlock"))(
                        h, emb, train)
                    if (attn := attention(size)) is not None:
                        h = attn(h, frame_is_image)
                if level != 0:
                    h = Upsample(self.dtype)(h)
                    size *= 2
        assert not skips, "every skip connection must be consumed"

        h = FrameGroupNorm(self.dtype, self.fused_norm)(h, silu=True)
        out = SpatialConv(self.out_channels, zero_init=True, dtype=self.dtype, name="conv_out")(h)
        return out.astype(jnp.float32)
