"""Stable Diffusion 1.x conditional UNet (diffusers' `UNet2DConditionModel`) in linen.

Channels-last throughout: latents [B, H, W, C] in, noise prediction [B, H, W, C] out.
Every linen module is named after its PyTorch counterpart ("down_blocks.1" holding
"resnets.0", "attentions.0", "downsamplers.0"), so `convert.convert_state_dict` maps a
diffusers safetensors checkpoint onto the params without a hand-written table.

The building blocks (ResNet, Transformer2D, down / mid blocks, the timestep embedding
and the encoder half) are shared with `controlnet.py`, whose encoder is the same
network under the same names.

Supported: the SD 1.x / 2.x feature set — `DownBlock2D` / `CrossAttnDownBlock2D`,
`UNetMidBlock2DCrossAttn`, `UpBlock2D` / `CrossAttnUpBlock2D`, GEGLU feed-forward,
`use_linear_projection` either way, `attention_head_dim` as diffusers reads it (the
number of heads per block), `transformer_layers_per_block`, `upcast_attention`.
Anything else a config names with a non-default value raises `ConfigError`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vdiff.errors import ConfigError
from vdiff.models.sd import convert
from vdiff.models.sd.attention import multihead_attention

Array = jnp.ndarray
Dtype = Any

DOWN_BLOCK_TYPES = ("DownBlock2D", "CrossAttnDownBlock2D")
UP_BLOCK_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D")
_TRANSFORMER_NORM_EPS = 1e-6   # Transformer2DModel's GroupNorm
_LAYER_NORM_EPS = 1e-5         # BasicTransformerBlock's LayerNorms

# ---------------------------------------------------------------------------- config

# Config keys that say nothing about the network's computation.
_HARMLESS_KEYS = frozenset({
    "_class_name", "_diffusers_version", "_name_or_path", "_use_default_values",
    "sample_size",
    "addition_embed_type_num_heads",  # only read when addition_embed_type is set
})

# diffusers features this port does not implement: a config may name them, but only
# with one of these values (their defaults, i.e. the feature switched off).
_OFF_VALUES: dict[str, tuple[Any, ...]] = {
    "only_cross_attention": (False,),
    "mid_block_only_cross_attention": (None, False),
    "dual_cross_attention": (False,),
    "class_embed_type": (None,),
    "num_class_embeds": (None, 0),
    "class_embeddings_concat": (False,),
    "projection_class_embeddings_input_dim": (None,),
    "addition_embed_type": (None,),
    "addition_time_embed_dim": (None,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "time_embedding_type": ("positional",),
    "time_embedding_dim": (None,),
    "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,),
    "resnet_time_scale_shift": ("default",),
    "resnet_skip_time_act": (False,),
    "resnet_out_scale_factor": (1.0,),
    "conv_in_kernel": (3,),
    "conv_out_kernel": (3,),
    "attention_type": ("default",),
    "cross_attention_norm": (None,),
    "reverse_transformer_layers_per_block": (None,),
    "act_fn": ("silu",),
    "dropout": (0.0,),
    "mid_block_type": ("UNetMidBlock2DCrossAttn",),
}


def _per_block(value: int | Sequence[int], n: int, key: str) -> tuple[int, ...]:
    """An int broadcast to every block, or a per-block sequence checked for length."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n
    value = tuple(value)
    if len(value) != n or not all(isinstance(v, (int, np.integer)) for v in value):
        raise ConfigError(f"{key} must be an int or {n} ints (one per down block), got {value}")
    return tuple(int(v) for v in value)


def _is_off(key: str, value: Any) -> bool:
    allowed = _OFF_VALUES[key]
    if isinstance(value, (list, tuple)):  # per-block flags, e.g. only_cross_attention
        return all(v in allowed for v in value)
    return value in allowed


def check_config_keys(d: Mapping[str, Any], supported: set[str], what: str) -> None:
    """Raises ConfigError naming every unknown key and every switched-on unsupported
    feature, so a config this port would silently misread never loads."""
    problems = []
    for key in sorted(d):
        if key in supported or key in _HARMLESS_KEYS:
            continue
        if key in _OFF_VALUES:
            if not _is_off(key, d[key]):
                allowed = " or ".join(repr(v) for v in _OFF_VALUES[key])
                problems.append(f"{key}={d[key]!r} is not supported (only {allowed})")
        else:
            problems.append(f"unknown config key {key}={d[key]!r}")
    if problems:
        raise ConfigError(f"{what} config: " + "; ".join(problems) + ".")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """What the UNet's encoder half (and hence a ControlNet) is built from.

    Defaults are Stable Diffusion 1.5's. Per-block fields take an int (every block)
    or one value per down block; they are stored as tuples.
    num_attention_heads: heads per block — what diffusers' SD 1.x configs call
      `attention_head_dim` (a historical misnomer diffusers keeps).
    """

    in_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    layers_per_block: tuple[int, ...] | int = 2
    num_attention_heads: tuple[int, ...] | int = 8
    transformer_layers_per_block: tuple[int, ...] | int = 1
    cross_attention_dim: int = 768
    use_linear_projection: bool = False
    upcast_attention: bool = False
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen)
        set_("block_out_channels", tuple(int(c) for c in self.block_out_channels))
        set_("down_block_types", tuple(self.down_block_types))
        for key in ("layers_per_block", "num_attention_heads", "transformer_layers_per_block"):
            set_(key, _per_block(getattr(self, key), n, key))
        if len(self.down_block_types) != n:
            raise ConfigError(f"down_block_types has {len(self.down_block_types)} entries "
                              f"but block_out_channels has {n}")
        bad = [t for t in self.down_block_types if t not in DOWN_BLOCK_TYPES]
        if bad:
            raise ConfigError(f"unsupported down_block_types {bad}; supported: {DOWN_BLOCK_TYPES}")
        if self.downsample_padding not in (0, 1):
            raise ConfigError(f"downsample_padding must be 0 or 1, got {self.downsample_padding}")
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ConfigError(f"block_out_channels {c} is not divisible by "
                                  f"norm_num_groups {self.norm_num_groups}")
        for c, h in zip(self.block_out_channels, self.num_attention_heads):
            if h < 1 or c < h:
                raise ConfigError(f"{h} attention heads do not fit {c} channels")

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]

    @property
    def down_factor(self) -> int:
        """How much the encoder shrinks H and W."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def _common_from_diffusers(cls, d: Mapping[str, Any]) -> dict[str, Any]:
        """The EncoderConfig fields from a diffusers config dict."""
        defaults = cls()
        cross = d.get("cross_attention_dim", 1280)
        if isinstance(cross, (list, tuple)):
            if len(set(cross)) != 1:
                raise ConfigError(f"per-block cross_attention_dim {cross} is not supported")
            cross = cross[0]
        tlpb = d.get("transformer_layers_per_block", 1)
        if isinstance(tlpb, (list, tuple)) and any(isinstance(t, (list, tuple)) for t in tlpb):
            raise ConfigError(f"nested transformer_layers_per_block {tlpb} is not supported")
        groups = d.get("norm_num_groups", 32)
        if groups is None:
            raise ConfigError("norm_num_groups=None (no GroupNorm) is not supported")
        # diffusers: `num_attention_heads or attention_head_dim`; SD 1.x configs only set
        # the latter, and it counts heads.
        heads = d.get("num_attention_heads") or d.get("attention_head_dim", 8)
        return dict(
            in_channels=d.get("in_channels", 4),
            block_out_channels=tuple(d.get("block_out_channels", defaults.block_out_channels)),
            down_block_types=tuple(d.get("down_block_types", defaults.down_block_types)),
            layers_per_block=d.get("layers_per_block", 2),
            num_attention_heads=heads,
            transformer_layers_per_block=tlpb,
            cross_attention_dim=int(cross),
            use_linear_projection=bool(d.get("use_linear_projection", False)),
            upcast_attention=bool(d.get("upcast_attention", False)),
            norm_num_groups=int(groups),
            norm_eps=float(d.get("norm_eps", 1e-5)),
            flip_sin_to_cos=bool(d.get("flip_sin_to_cos", True)),
            freq_shift=d.get("freq_shift", 0),
            downsample_padding=int(d.get("downsample_padding", 1)),
            mid_block_scale_factor=float(d.get("mid_block_scale_factor", 1.0)),
        )


_COMMON_KEYS = {
    "in_channels", "block_out_channels", "down_block_types", "layers_per_block",
    "attention_head_dim", "num_attention_heads", "transformer_layers_per_block",
    "cross_attention_dim", "use_linear_projection", "upcast_attention", "norm_num_groups",
    "norm_eps", "flip_sin_to_cos", "freq_shift", "downsample_padding",
    "mid_block_scale_factor",
}


@dataclasses.dataclass(frozen=True)
class UNetConfig(EncoderConfig):
    """The UNet: the encoder fields plus the decoder's and the output's."""

    out_channels: int = 4
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    center_input_sample: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "up_block_types", tuple(self.up_block_types))
        if len(self.up_block_types) != len(self.block_out_channels):
            raise ConfigError(f"up_block_types has {len(self.up_block_types)} entries but "
                              f"block_out_channels has {len(self.block_out_channels)}")
        bad = [t for t in self.up_block_types if t not in UP_BLOCK_TYPES]
        if bad:
            raise ConfigError(f"unsupported up_block_types {bad}; supported: {UP_BLOCK_TYPES}")

    @classmethod
    def from_diffusers_config(cls, d: Mapping[str, Any]) -> "UNetConfig":
        """From a diffusers `UNet2DConditionModel` config.json dict; raises ConfigError
        naming any feature this port does not implement."""
        check_config_keys(d, _COMMON_KEYS | {"out_channels", "up_block_types",
                                             "center_input_sample"}, "UNet")
        if d.get("num_attention_heads") is not None:
            # diffusers' UNet2DConditionModel refuses it too (its meaning is ambiguous).
            raise ConfigError("UNet config: num_attention_heads is not supported by "
                              "UNet2DConditionModel; SD configs set attention_head_dim")
        return cls(**cls._common_from_diffusers(d),
                   out_channels=d.get("out_channels", 4),
                   up_block_types=tuple(d.get("up_block_types", cls().up_block_types)),
                   center_input_sample=bool(d.get("center_input_sample", False)))


@dataclasses.dataclass(frozen=True)
class Numerics:
    """How every block computes, independent of the architecture."""

    groups: int
    eps: float
    upcast_attention: bool = False
    attention_impl: str | None = None
    dtype: Dtype = jnp.float32
    remat: bool = False


def numerics_for(config: EncoderConfig, dtype: Dtype, attention_impl: str | None,
                 remat: bool) -> Numerics:
    return Numerics(config.norm_num_groups, config.norm_eps, config.upcast_attention,
                    attention_impl, dtype, remat)


# ---------------------------------------------------------------------------- layers


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


# ---------------------------------------------------------------------------- blocks


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


# ---------------------------------------------------------------------------- UNet


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
