"""NextNet: SinFusion's attention-free, full-resolution ConvNeXt UNet (Nikankin et al. 2023).

    out = NextNet(out_channels=3).apply({"params": p}, x, logsnr, frame_diff=k)

x: [B, H, W, C_in] (the noisy frame, with any clean conditioning frames concatenated on
channels by the caller); logsnr: [B]; frame_diff: optional int [B] (or scalar), the frame
difference k of SinFusion's Predictor, used only when `max_k > 0`. Output [B, H, W, out].

Layout (every convolution has stride 1 and SAME padding, so any H, W works and the
receptive field is finite and known — see :func:`receptive_field`)::

    h₀ = conv_s×s(x)                                              stem
    block i (i = 0 … D−1):
        if i ≥ D − ⌊D/2⌋:  h ← conv₁ₓ₁([h, skip_{D−1−i}])          UNet skip, full resolution
        u = dwconv₇ₓ₇(h) + W_i gelu(e)                             per-channel noise bias
        h ← h + conv₃ₓ₃(gelu(conv₃ₓ₃^{×mult}(LN_c(u))))             ConvNeXt residual
        skip_i = h   (blocks of the first half)
    out = conv_o×o(h)   (zero-initialised by default)

with the embedding e = MLP([sin-features(t(λ)), E_k[k + max_k]]), t(λ) the bounded time
coordinate of `vdiff.nn.embeddings.logsnr_to_unit_time`. LayerNorm acts on channels only
(per pixel), so nothing but the convolutions mixes pixels.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vdiff.nn import partitioning as P
from vdiff.nn.embeddings import logsnr_to_unit_time, sinusoidal_embedding

default_init = nn.initializers.lecun_normal()


def receptive_field(depth: int, *, stem_kernel: int = 3, dw_kernel: int = 7,
                    conv_kernel: int = 3, out_kernel: int = 3) -> int:
    """Receptive field (pixels, per axis) of NextNet as built.

    Every k×k stride-1 conv on the longest path adds k − 1 (1×1 skip merges add 0):
    RF = 1 + (s − 1) + D·((7 − 1) + 2·(3 − 1)) + (o − 1), e.g. 165 for D = 16.
    """
    per_block = (dw_kernel - 1) + 2 * (conv_kernel - 1)
    return 1 + (stem_kernel - 1) + depth * per_block + (out_kernel - 1)


def constrain_image(x: jax.Array) -> jax.Array:
    """Pins a [B, H, W, C] activation to the batch sharding (no-op without a mesh)."""
    return nn.with_logical_constraint(x, (P.BATCH, None, None, P.CHANNELS))


class Conv(nn.Module):
    """k×k stride-1 SAME convolution with logically partitioned kernel."""

    features: int
    kernel: int = 3
    zero_init: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.initializers.zeros if self.zero_init else default_init
        return nn.Conv(self.features, (self.kernel, self.kernel), padding="SAME",
                       dtype=self.dtype,
                       kernel_init=P.partitioned(init, (None, None, P.EMBED, P.MLP)))(x)


class NoiseEmbedding(nn.Module):
    """e = W₂ gelu(W₁ [sin-features(1000 t(λ)), E_k[k + max_k]]), shape [B, 4·dim].

    The frame-difference table E_k covers k ∈ [−max_k, max_k] (k is clipped into it); it is
    left out when max_k = 0.
    """

    dim: int
    max_k: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, logsnr: jax.Array, frame_diff: jax.Array | None) -> jax.Array:
        t = logsnr_to_unit_time(logsnr.astype(jnp.float32)) * 1000.0
        feats = [sinusoidal_embedding(t, self.dim)]
        if self.max_k:
            if frame_diff is None:
                raise ValueError("this NextNet embeds the frame difference k: pass frame_diff")
            k = jnp.broadcast_to(jnp.asarray(frame_diff, jnp.int32), logsnr.shape)
            table = nn.Embed(2 * self.max_k + 1, self.dim, name="frame_diff_embed",
                             embedding_init=P.partitioned(nn.initializers.normal(0.02),
                                                          (P.VOCAB, P.MLP)))
            feats.append(table(jnp.clip(k, -self.max_k, self.max_k) + self.max_k))
        e = jnp.concatenate(feats, axis=-1).astype(self.dtype)
        dense = lambda name: nn.Dense(  # noqa: E731
            4 * self.dim, dtype=self.dtype, name=name,
            kernel_init=P.partitioned(default_init, (P.EMBED, P.MLP)))
        return dense("mlp_out")(nn.gelu(dense("mlp_in")(e)))


class ConvNeXtBlock(nn.Module):
    """h + conv₃(gelu(conv₃^{×mult}(LN_c(dwconv₇(h) + W gelu(e))))); see module docstring."""

    width: int
    mult: int = 2
    dw_kernel: int = 7
    conv_kernel: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, emb: jax.Array) -> jax.Array:
        u = nn.Conv(self.width, (self.dw_kernel, self.dw_kernel), padding="SAME",
                    feature_group_count=self.width, dtype=self.dtype, name="dwconv",
                    kernel_init=P.partitioned(default_init, (None, None, None, P.MLP)))(h)
        bias = nn.Dense(self.width, dtype=self.dtype, name="noise_bias",
                        kernel_init=P.partitioned(default_init, (P.EMBED, P.MLP)))(nn.gelu(emb))
        u = u + bias[:, None, None, :]
        # Statistics in float32 even under bf16 compute.
        u = nn.LayerNorm(dtype=jnp.float32, name="norm")(u).astype(self.dtype)
        u = Conv(self.width * self.mult, self.conv_kernel, dtype=self.dtype, name="expand")(u)
        u = Conv(self.width, self.conv_kernel, dtype=self.dtype, name="project")(nn.gelu(u))
        return constrain_image(h + u)


class NextNet(nn.Module):
    """Fully convolutional ConvNeXt UNet at full resolution; see the module docstring."""

    out_channels: int
    width: int = 64
    depth: int = 16
    mult: int = 2
    max_k: int = 0  # > 0: embed the frame difference k ∈ [−max_k, max_k]
    stem_kernel: int = 3
    out_kernel: int = 3
    zero_init_output: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, logsnr: jax.Array,
                 frame_diff: jax.Array | None = None) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"NextNet takes [B, H, W, C] inputs, got shape {x.shape}")
        with jax.named_scope("nextnet"):
            logsnr = jnp.broadcast_to(jnp.asarray(logsnr, jnp.float32), (x.shape[0],))
            emb = NoiseEmbedding(self.width, self.max_k, self.dtype, name="embed")(
                logsnr, frame_diff)
            h = constrain_image(Conv(self.width, self.stem_kernel, dtype=self.dtype,
                                     name="stem")(x.astype(self.dtype)))
            num_skips = self.depth // 2
            skips = []
            for i in range(self.depth):
                if i >= self.depth - num_skips:
                    h = jnp.concatenate([h, skips[self.depth - 1 - i]], axis=-1)
                    h = Conv(self.width, 1, dtype=self.dtype, name=f"merge_{i}")(h)
                h = ConvNeXtBlock(self.width, self.mult, dtype=self.dtype, name=f"block_{i}")(
                    h, emb)
                if i < num_skips:
                    skips.append(h)
            out = Conv(self.out_channels, self.out_kernel, zero_init=self.zero_init_output,
                       dtype=self.dtype, name="out")(h)
        return out.astype(jnp.float32)
