"""Space-only building blocks for factorized video networks.

Every layer here treats a video as a stack of frames: inputs are [B, F, H, W, C]
and nothing mixes information across frames except `TemporalAttention`. That
property is what lets images ride along as extra frames in joint training.
"""

from __future__ import annotations

from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from vdiff.nn import fused_norm
from vdiff.nn import partitioning as P

zeros_init = nn.initializers.zeros
default_init = nn.initializers.lecun_normal()


def num_groups_for(channels: int, max_groups: int = 32) -> int:
    """Largest group count ≤ max_groups that divides `channels`."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


class ChannelsLastGroupNorm(nn.Module):
    """GroupNorm over [..., H, W, C] in two layout-friendly reductions; float32 output.

    Same parameters ('scale', 'bias'), epsilon and statistics as flax's ``nn.GroupNorm``
    with float32 stats (tested to match), but the reductions run over H and W with the
    channels kept as the contiguous minor axis; only the tiny [..., C] sums are then folded
    into groups. flax reshapes to [..., H, W, G, C/G] and reduces the non-contiguous axes
    (H, W, C/G) at once. Normalisation, scale and bias are one elementwise expression that
    XLA fuses with the following cast / FiLM / SiLU.
    """

    num_groups: int
    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        c, g = x.shape[-1], self.num_groups
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        xf = x.astype(jnp.float32)
        spatial = (x.ndim - 3, x.ndim - 2)
        lead = x.shape[:-3]
        count = x.shape[-3] * x.shape[-2] * (c // g)
        # Per-channel sums, then per-group: [..., C] → [..., G, C/G] → [..., G].
        group_sum = lambda v: jnp.sum(v.reshape(*lead, g, c // g), axis=-1)  # noqa: E731
        mean = group_sum(jnp.sum(xf, axis=spatial)) / count
        mean_sq = group_sum(jnp.sum(xf * xf, axis=spatial)) / count
        var = jnp.maximum(mean_sq - mean * mean, 0.0)  # one-pass variance, as flax's default
        inv = jnp.repeat(jax.lax.rsqrt(var + self.epsilon), c // g, axis=-1)  # [..., C]
        mean = jnp.repeat(mean, c // g, axis=-1)
        # (x − mean)·a + bias, not x·a + (bias − mean·a): the same single fused pass, but no
        # cancellation between two large terms when |mean| ≫ std.
        return (xf - mean[..., None, None, :]) * (inv * scale)[..., None, None, :] + bias


class FusedGroupNormFiLMSiLU(nn.Module):
    """silu(FiLM(GroupNorm(x))) through `fused_norm.fused`: the parameters ('scale', 'bias')
    of `ChannelsLastGroupNorm`, so a checkpoint loads with the fused path on or off."""

    num_groups: int
    impl: str  # 'on' | 'interpret' (fused_norm.IMPLS)
    dtype: Any = jnp.float32
    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: jnp.ndarray, film: tuple[jnp.ndarray, jnp.ndarray] | None):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        film_scale, film_shift = (None, None) if film is None else film
        return fused_norm.fused(x, scale, bias, film_scale, film_shift, groups=self.num_groups,
                                eps=self.epsilon, out_dtype=self.dtype, impl=self.impl)


class FrameGroupNorm(nn.Module):
    """GroupNorm with statistics per frame (never across frames); float32 statistics.

    `film=(scale, shift)` ([B, F, C] each) applies h·(1 + scale) + shift and `silu=True` a
    SiLU after the norm, in `dtype`. With `fused` 'on' or 'interpret' (resolved by
    `vdiff.runtime.fused_norm`) a norm followed by SiLU runs as one Pallas kernel
    (`vdiff.nn.fused_norm`; it falls back to these same operations where it does not apply).
    """

    dtype: Any = jnp.float32
    fused: str = "off"

    @nn.compact
    def __call__(self, x: jnp.ndarray, film: tuple[jnp.ndarray, jnp.ndarray] | None = None,
                 *, silu: bool = False) -> jnp.ndarray:
        # [B, F, H, W, C]: reducing H and W per (b, f) keeps every frame separate. The name
        # keeps the parameter tree of the nn.GroupNorm this replaced (old checkpoints load).
        groups = num_groups_for(x.shape[-1])
        if silu and self.fused != "off":
            return FusedGroupNormFiLMSiLU(groups, self.fused, self.dtype, name="GroupNorm_0")(
                x, film)
        h = ChannelsLastGroupNorm(groups, name="GroupNorm_0")(x).astype(self.dtype)
        if film is not None:
            scale, shift = film
            h = h * (1.0 + scale[..., None, None, :]) + shift[..., None, None, :]
        return nn.swish(h) if silu else h


class SpatialConv(nn.Module):
    """A 1×k×k convolution: each frame convolved independently."""

    features: int
    kernel: int = 3
    stride: int = 1
    zero_init: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        b = x.shape[0]
        h = einops.rearrange(x, "b f h w c -> (b f) h w c")
        init = zeros_init if self.zero_init else default_init
        h = nn.Conv(
            self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
            padding="SAME", dtype=self.dtype,
            kernel_init=P.partitioned(init, (None, None, P.EMBED, P.MLP)))(h)
        return einops.rearrange(h, "(b f) h w c -> b f h w c", b=b)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv → GroupNorm → FiLM(emb) → SiLU → dropout → conv, plus skip."""

    features: int
    dropout: float = 0.0
    dtype: Any = jnp.float32
    fused_norm: str = "off"  # FrameGroupNorm.fused: 'off' | 'on' | 'interpret'

    @nn.compact
    # `train` may be positional so that `nn.remat(ResBlock, static_argnums=(3,))` can mark it static.
    def __call__(self, x: jnp.ndarray, emb: jnp.ndarray, train: bool) -> jnp.ndarray:
        h = FrameGroupNorm(self.dtype, self.fused_norm)(x, silu=True)
        h = SpatialConv(self.features, dtype=self.dtype)(h)
        film = nn.Dense(
            2 * self.features, dtype=self.dtype, name="film",
            kernel_init=P.partitioned(default_init, (P.EMBED, P.MLP)))(nn.swish(emb))
        scale, shift = jnp.split(film, 2, axis=-1)  # [B, F, C] each
        h = FrameGroupNorm(self.dtype, self.fused_norm)(h, (scale, shift), silu=True)
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = SpatialConv(self.features, zero_init=True, dtype=self.dtype)(h)
        if x.shape[-1] != self.features:
            x = SpatialConv(self.features, kernel=1, dtype=self.dtype, name="skip")(x)
        return P.constrain_video(x + h)


class Downsample(nn.Module):
    """Halves H and W with a stride-2 space-only convolution; frames untouched."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return SpatialConv(x.shape[-1], stride=2, dtype=self.dtype)(x)


class Upsample(nn.Module):
    """Doubles H and W (nearest neighbour) then a space-only convolution."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = einops.repeat(x, "b f h w c -> b f (h 2) (w 2) c")
        return SpatialConv(x.shape[-1], dtype=self.dtype)(x)
