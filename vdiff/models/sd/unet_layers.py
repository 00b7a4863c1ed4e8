"""The layers of the Stable Diffusion UNet, named after diffusers' modules: norms, convs,
the timestep embedding, ResnetBlock2D, Transformer2DModel (self- and cross-attention,
GEGLU feed-forward) and the down / up samplers."""

from __future__ import annotations

import math

import einops
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from vdiff.models.sd.attention import multihead_attention
from vdiff.models.sd.unet_config import Array, Dtype, Numerics

_TRANSFORMER_NORM_EPS = 1e-6   # Transformer2DModel's GroupNorm
_LAYER_NORM_EPS = 1e-5         # BasicTransformerBlock's LayerNorms


def group_norm(x: Array, *, groups: int, eps: float, name: str, dtype: Dtype) -> Array:
    """GroupNorm with float32 statistics (bf16 variance is too coarse), output in `dtype`.
    Two-pass variance, as torch computes it."""
    y = nn.GroupNorm(num_groups=groups, epsilon=eps, dtype=jnp.float32,
                     use_fast_variance=False, name=name)(x.astype(jnp.float32))
    return y.astype(dtype)


def layer_norm(x: Array, *, name: str, dtype: Dtype) -> Array:
    y = nn.LayerNorm(epsilon=_LAYER_NORM_EPS, dtype=jnp.float32, use_fast_variance=False,
                     name=name)(x.astype(jnp.float32))
    return y.astype(dtype)


def conv(features: int, name: str, dtype: Dtype, *, kernel: int = 3, stride: int = 1,
         padding: int | None = None, zero_init: bool = False) -> nn.Conv:
    """A torch-style Conv2d (explicit symmetric padding, default `kernel // 2`), NHWC.
    zero_init: weight and bias zero, as diffusers' `zero_module`."""
    p = kernel // 2 if padding is None else padding
    extra = dict(kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros) \
        if zero_init else {}
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((p, p), (p, p)), dtype=dtype, name=name, **extra)


def dense(features: int, name: str, dtype: Dtype, *, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, name=name)


def nearest_resize(x: Array, size: tuple[int, int]) -> Array:
    """Nearest-neighbour resize of [B, H, W, C] to `size`, with torch's index rule
    (source = floor(dest · in / out)); exact 2× is a plain repeat."""
    h, w = x.shape[1:3]
    if tuple(size) == (2 * h, 2 * w):
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    rows = (np.arange(size[0]) * h) // size[0]
    cols = (np.arange(size[1]) * w) // size[1]
    return x[:, rows][:, :, cols]


def timestep_embedding(timesteps: Array, dim: int, *, flip_sin_to_cos: bool,
                       freq_shift: float, max_period: float = 10000.0) -> Array:
    """Sinusoidal features [B, dim] of (possibly fractional) timesteps, float32.
    Frequencies exp(−ln(max_period)·i / (dim/2 − freq_shift)); [sin, cos], or
    [cos, sin] with flip_sin_to_cos (SD's choice)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32)
                    / (half - freq_shift))
    args = timesteps.astype(jnp.float32)[:, None] * freqs[None]
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nn.Module):
    """linear_1 → SiLU → linear_2: sinusoidal features to the blocks' conditioning vector."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, t_emb: Array) -> Array:
        h = nn.silu(dense(self.features, "linear_1", self.dtype)(t_emb))
        return dense(self.features, "linear_2", self.dtype)(h)


class ResnetBlock2D(nn.Module):
    """norm1 → SiLU → conv1 → + time_emb_proj(SiLU(temb)) → norm2 → SiLU → conv2, plus a
    (1×1 conv_shortcut where the width changes) skip, divided by output_scale_factor."""

    out_channels: int
    num: Numerics
    output_scale_factor: float = 1.0

    @nn.compact
    def __call__(self, x: Array, temb: Array) -> Array:
        n, c = self.num, self.out_channels
        h = nn.silu(group_norm(x, groups=n.groups, eps=n.eps, name="norm1", dtype=n.dtype))
        h = conv(c, "conv1", n.dtype)(h)
        t = dense(c, "time_emb_proj", n.dtype)(nn.silu(temb))
        h = h + t[:, None, None, :]
        h = nn.silu(group_norm(h, groups=n.groups, eps=n.eps, name="norm2", dtype=n.dtype))
        h = conv(c, "conv2", n.dtype)(h)
        if x.shape[-1] != c:
            x = conv(c, "conv_shortcut", n.dtype, kernel=1)(x)
        return (x + h) / self.output_scale_factor


class Attention(nn.Module):
    """to_q / to_k / to_v (no bias) → multi-head attention → to_out.0. Self-attention
    when `context` is None, else cross-attention to it."""

    heads: int
    num: Numerics

    @nn.compact
    def __call__(self, x: Array, context: Array | None = None) -> Array:
        n, inner = self.num, x.shape[-1]
        context = x if context is None else context
        q = dense(inner, "to_q", n.dtype, use_bias=False)(x)
        k = dense(inner, "to_k", n.dtype, use_bias=False)(context)
        v = dense(inner, "to_v", n.dtype, use_bias=False)(context)
        if n.upcast_attention:  # SD 2.1 overflows in half precision without it
            q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
        out = multihead_attention(q, k, v, num_heads=self.heads,
                                  implementation=n.attention_impl).astype(n.dtype)
        return dense(inner, "to_out.0", n.dtype)(out)


class GEGLU(nn.Module):
    """proj to 2·features, split, value · GELU(gate) (exact erf GELU, as torch's default)."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        value, gate = jnp.split(dense(2 * self.features, "proj", self.dtype)(x), 2, axis=-1)
        return value * nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
    """net.0 (GEGLU to 4× width) → net.2 (back); net.1 is torch's parameterless dropout."""

    mult: int = 4
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = GEGLU(self.mult * x.shape[-1], self.dtype, name="net.0")(x)
        return dense(x.shape[-1], "net.2", self.dtype)(h)


class BasicTransformerBlock(nn.Module):
    """Pre-LayerNorm self-attention, cross-attention to the text tokens, GEGLU MLP."""

    heads: int
    num: Numerics

    @nn.compact
    def __call__(self, x: Array, context: Array) -> Array:
        d = self.num.dtype
        x = x + Attention(self.heads, self.num, name="attn1")(layer_norm(x, name="norm1", dtype=d))
        x = x + Attention(self.heads, self.num, name="attn2")(
            layer_norm(x, name="norm2", dtype=d), context)
        return x + FeedForward(dtype=d, name="ff")(layer_norm(x, name="norm3", dtype=d))


class Transformer2DModel(nn.Module):
    """GroupNorm → proj_in → transformer blocks over the H·W tokens → proj_out, plus skip.

    proj_in / proj_out are Dense layers whether the checkpoint stores them as Linear
    (use_linear_projection) or as 1×1 convs: per position they are the same map, and
    convert.py reshapes the conv weights.
    """

    heads: int
    num_layers: int
    num: Numerics

    @nn.compact
    def __call__(self, x: Array, context: Array) -> Array:
        n = self.num
        b, h, w, c = x.shape
        inner = self.heads * (c // self.heads)
        t = group_norm(x, groups=n.groups, eps=_TRANSFORMER_NORM_EPS, name="norm", dtype=n.dtype)
        t = dense(inner, "proj_in", n.dtype)(einops.rearrange(t, "b h w c -> b (h w) c"))
        context = context.astype(n.dtype)
        for i in range(self.num_layers):
            t = BasicTransformerBlock(self.heads, n, name=f"transformer_blocks.{i}")(t, context)
        t = dense(c, "proj_out", n.dtype)(t)
        return x + einops.rearrange(t, "b (h w) c -> b h w c", h=h, w=w)


def resnet(num: Numerics, out_channels: int, name: str, scale: float = 1.0) -> nn.Module:
    """A ResnetBlock2D, rematerialised in the backward pass when num.remat."""
    cls = nn.remat(ResnetBlock2D) if num.remat else ResnetBlock2D
    return cls(out_channels, num, scale, name=name)


def transformer(num: Numerics, heads: int, layers: int, name: str) -> nn.Module:
    """A Transformer2DModel, rematerialised in the backward pass when num.remat."""
    cls = nn.remat(Transformer2DModel) if num.remat else Transformer2DModel
    return cls(heads, layers, num, name=name)


class Downsample2D(nn.Module):
    """Stride-2 3×3 conv ("conv"); padding 0 pads right / bottom first, as diffusers."""

    padding: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.padding == 0:
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return conv(x.shape[-1], "conv", self.dtype, stride=2, padding=self.padding)(x)


class Upsample2D(nn.Module):
    """Nearest resize to `size` (2× unless the encoder rounded odd sizes up) → 3×3 conv."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, size: tuple[int, int]) -> Array:
        return conv(x.shape[-1], "conv", self.dtype)(nearest_resize(x, size))
