"""Configuration of the Stable Diffusion UNet and of its encoder half (shared with the
ControlNet): the config dataclasses read from diffusers' config.json, the check that
refuses features this port does not implement, and the blocks' `Numerics`."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from vdiff.errors import ConfigError

Array = jnp.ndarray
Dtype = Any

DOWN_BLOCK_TYPES = ("DownBlock2D", "CrossAttnDownBlock2D")
UP_BLOCK_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D")

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
