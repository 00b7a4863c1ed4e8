"""Factorized space-time self-attention.

Spatial attention mixes the H·W positions of one frame; temporal attention mixes
the F frames at one spatial position, with a learned relative-position bias and
an optional mask that isolates image frames (joint image-video training).
Both go through `jax.nn.dot_product_attention`, whose `implementation` is chosen
by the config: cuDNN is much faster for long spatial sequences in bf16, XLA for
the short temporal ones (see DESIGN.md, performance reference points).
"""

from __future__ import annotations

from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from vdiff.nn import partitioning as P
from vdiff.nn.layers import FrameGroupNorm, default_init, zeros_init


def image_frame_mask(frame_is_image: jnp.ndarray) -> jnp.ndarray:
    """Attention mask [B, F, F]: video frames see video frames, an image frame sees itself.

    frame_is_image: bool [B, F]. Entry (i, j) is True when query frame i may attend
    to key frame j.
    """
    video = ~frame_is_image
    same_kind_video = video[:, :, None] & video[:, None, :]
    eye = jnp.eye(frame_is_image.shape[1], dtype=bool)[None]
    return same_kind_video | eye


def relative_position_buckets(num_frames: int, max_distance: int) -> jnp.ndarray:
    """Index table [F, F] of clipped relative offsets (j − i) shifted to ≥ 0."""
    pos = jnp.arange(num_frames)
    rel = jnp.clip(pos[None, :] - pos[:, None], -max_distance, max_distance)
    return rel + max_distance


def usable_implementation(implementation: str | None, q: jnp.ndarray,
                          k: jnp.ndarray) -> str | None:
    """`implementation`, or None (XLA) where cuDNN's fused attention cannot run: float32
    inputs, head dims not a multiple of 8 or above 256, or odd sequence lengths (e.g. a
    16-token line plus PVDM's summary token). Lets one config switch cover every layer."""
    if implementation != "cudnn":
        return implementation
    head_dim = q.shape[-1]
    if (q.dtype not in (jnp.bfloat16, jnp.float16) or head_dim % 8 or head_dim > 256
            or q.shape[-3] % 2 or k.shape[-3] % 2):
        return None
    return implementation


def attend_axis1(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, *, bias=None,
                 mask=None) -> jnp.ndarray:
    """Softmax attention over axis 1 of [B, L, *S, N, D] heads, in place: no transposes
    to a [B·S, L] token layout, so XLA picks the layout of the two small batched dots.
    bias broadcasts to [B, *S, N, Lq, Lk] (e.g. [1, N, Lq, Lk]); mask likewise (True =
    attend). Logits and softmax in float32."""
    logits = jnp.einsum("bq...nd,bk...nd->b...nqk", q, k,
                        preferred_element_type=jnp.float32) * (q.shape[-1] ** -0.5)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("b...nqk,bk...nd->bq...nd", probs, v)


class HeadsAttention(nn.Module):
    """Projects to heads, attends over axis 1 of [N, L, C] tokens, projects back.
    With implementation 'einsum' the tokens may be [N, L, *S, C]: attention over axis 1
    for every position of S (`attend_axis1`)."""

    head_dim: int
    implementation: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens, *, bias=None, mask=None):
        channels = tokens.shape[-1]
        if channels % self.head_dim:
            raise ValueError(f"channels {channels} not divisible by head_dim {self.head_dim}")
        heads = channels // self.head_dim
        qkv = nn.Dense(
            3 * heads * self.head_dim, dtype=self.dtype, name="qkv",
            kernel_init=P.partitioned(default_init, (P.EMBED, P.HEADS)))(tokens)
        q, k, v = jnp.split(qkv.reshape(*qkv.shape[:-1], 3 * heads, self.head_dim), 3, axis=-2)
        if self.implementation == "einsum":
            out = attend_axis1(q, k, v, bias=bias, mask=mask)
        else:
            out = jax.nn.dot_product_attention(
                q, k, v, bias=bias, mask=mask,
                implementation=usable_implementation(self.implementation, q, k))
        out = out.reshape(*out.shape[:-2], heads * self.head_dim)
        return nn.Dense(
            channels, dtype=self.dtype, name="out",
            kernel_init=P.partitioned(zeros_init, (P.HEADS, P.EMBED)))(out)


class SpatialAttention(nn.Module):
    """Residual self-attention over the pixels of each frame independently."""

    head_dim: int = 64
    implementation: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        b, f, h, w, _ = x.shape
        tokens = einops.rearrange(FrameGroupNorm(self.dtype)(x), "b f h w c -> (b f) (h w) c")
        out = HeadsAttention(self.head_dim, self.implementation, self.dtype)(tokens)
        out = einops.rearrange(out, "(b f) (h w) c -> b f h w c", b=b, f=f, h=h, w=w)
        return P.constrain_video(x + out)


class TemporalAttention(nn.Module):
    """Residual self-attention across frames at each pixel, with relative-position bias."""

    head_dim: int = 64
    max_relative_distance: int = 32
    implementation: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, frame_is_image: jnp.ndarray | None = None) -> jnp.ndarray:
        b, f, h, w, c = x.shape
        heads = c // self.head_dim
        table = self.param(
            "relative_bias",
            P.partitioned(zeros_init, (None, P.HEADS)),
            (2 * self.max_relative_distance + 1, heads), jnp.float32)
        bias = table[relative_position_buckets(f, self.max_relative_distance)]  # [F, F, N]
        bias = einops.rearrange(bias, "q k n -> 1 n q k").astype(self.dtype)
        if self.implementation == "einsum":  # attend across frames in place (no transposes)
            mask = None if frame_is_image is None else \
                image_frame_mask(frame_is_image)[:, None, None, None]  # [B, 1, 1, 1, F, F]
            out = HeadsAttention(self.head_dim, self.implementation, self.dtype)(
                FrameGroupNorm(self.dtype)(x), bias=bias, mask=mask)
            return P.constrain_video(x + out)
        mask = None
        if frame_is_image is not None:
            mask = jnp.repeat(image_frame_mask(frame_is_image)[:, None], h * w, axis=0)
        tokens = einops.rearrange(FrameGroupNorm(self.dtype)(x), "b f h w c -> (b h w) f c")
        out = HeadsAttention(self.head_dim, self.implementation, self.dtype)(
            tokens, bias=bias, mask=mask)
        out = einops.rearrange(out, "(b h w) f c -> b f h w c", b=b, h=h, w=w)
        return P.constrain_video(x + out)
