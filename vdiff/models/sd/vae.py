"""Stable Diffusion's KL autoencoder (diffusers `AutoencoderKL`) in linen.

Images are NHWC in [-1, 1]. The encoder maps them to the parameters of a diagonal
Gaussian over latents with 2^(len(block_out_channels) - 1) times less resolution;
the decoder maps a latent back to an image. The diffusion model works on
`scaling_factor * latent` (0.18215 for SD 1.x), which has roughly unit variance.

    vae, params = load_vae("<sd>/vae")
    mean, logvar = vae.apply({"params": params}, images, method=vae.encode)
    z = sample_latent(key, mean, logvar) * vae.config.scaling_factor
    images = vae.apply({"params": params}, z / vae.config.scaling_factor, method=vae.decode)

Linen module names are the diffusers state-dict names ("down_blocks.0" → "resnets.1"
→ "conv1"), so `convert.convert_state_dict` maps every weight; see convert.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vdiff.errors import ConfigError
from vdiff.models.sd import convert
from vdiff.models.sd.attention import multihead_attention

_ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "silu": nn.silu,
    "swish": nn.silu,
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "relu": nn.relu,
    "mish": lambda x: x * jnp.tanh(nn.softplus(x)),
}
_EPS = 1e-6  # diffusers hard-codes this for every VAE norm
# Old diffusers checkpoints name the mid-block attention like the original LDM code.
_LEGACY_ATTENTION_NAMES = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.",
                           ".proj_attn.": ".to_out.0."}


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """The AutoencoderKL hyper-parameters that shape the network (diffusers names)."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    act_fn: str = "silu"
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    def __post_init__(self):
        if self.act_fn not in _ACTIVATIONS:
            raise ConfigError(f"VAE act_fn {self.act_fn!r} is not supported; "
                              f"use one of {sorted(_ACTIVATIONS)}.")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ConfigError(f"VAE block_out_channels {self.block_out_channels} must be "
                              f"multiples of norm_num_groups {self.norm_num_groups}.")

    @property
    def downsample_factor(self) -> int:
        """Image pixels per latent pixel along each side."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_diffusers_config(cls, d: Mapping[str, Any]) -> "VAEConfig":
        """From a diffusers `AutoencoderKL` config.json dict; refuses block types this
        implementation does not have rather than building a different network."""
        n = len(d.get("block_out_channels", cls.block_out_channels))
        for key, want in (("down_block_types", "DownEncoderBlock2D"),
                          ("up_block_types", "UpDecoderBlock2D")):
            types = tuple(d.get(key, (want,) * n))
            if types != (want,) * n:
                raise ConfigError(f"VAE {key} {types} is not supported: only {n} × {want!r} "
                                  "(the Stable Diffusion 1.x / 2.x / XL autoencoder).")
        if d.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
            raise ConfigError(f"{d['_class_name']} is not an AutoencoderKL config.")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if "block_out_channels" in kwargs:
            kwargs["block_out_channels"] = tuple(kwargs["block_out_channels"])
        if kwargs.get("scaling_factor") is None:
            kwargs.pop("scaling_factor", None)
        return cls(**kwargs)


def sample_latent(key: jax.Array, mean: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
    """A draw from the diagonal Gaussian N(mean, exp(logvar)) that `encode` returns."""
    noise = jax.random.normal(key, mean.shape, jnp.float32)
    return mean + jnp.exp(0.5 * logvar) * noise


def _group_norm(x: jnp.ndarray, groups: int, name: str, dtype: Any) -> jnp.ndarray:
    """torch.nn.GroupNorm(eps=1e-6) with float32 statistics, back in the compute dtype.
    Must be called inside a compact method (the norm becomes a child named `name`)."""
    norm = nn.GroupNorm(num_groups=groups, epsilon=_EPS, dtype=jnp.float32,
                        use_fast_variance=False, name=name)
    return norm(x.astype(jnp.float32)).astype(dtype)


def _conv(features: int, kernel: int, name: str | None, dtype: Any, stride: int = 1,
          padding: Any = None) -> nn.Conv:
    """A torch-style Conv2d: 'same' padding of kernel // 2 unless given. name=None in
    `setup`, where the attribute names the module."""
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)) if padding is None else padding,
                   dtype=dtype, name=name)


class ResnetBlock2D(nn.Module):
    """norm → act → conv, twice, plus a (1×1-projected when the width changes) skip."""

    out_channels: int
    groups: int
    act_fn: str = "silu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        act = _ACTIVATIONS[self.act_fn]
        h = act(_group_norm(x, self.groups, "norm1", self.dtype))
        h = _conv(self.out_channels, 3, "conv1", self.dtype)(h)
        h = act(_group_norm(h, self.groups, "norm2", self.dtype))
        h = _conv(self.out_channels, 3, "conv2", self.dtype)(h)
        if x.shape[-1] != self.out_channels:
            x = _conv(self.out_channels, 1, "conv_shortcut", self.dtype)(x)
        return x + h


class SpatialSelfAttention(nn.Module):
    """The mid-block attention: group norm, one head over all H·W positions, residual.
    diffusers builds it with head_dim = channels, i.e. a single head."""

    groups: int
    num_heads: int = 1
    attention_impl: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        b, h, w, c = x.shape
        tokens = _group_norm(x, self.groups, "group_norm", self.dtype).reshape(b, h * w, c)
        q, k, v = (nn.Dense(c, dtype=self.dtype, name=n)(tokens)
                   for n in ("to_q", "to_k", "to_v"))
        out = multihead_attention(q, k, v, num_heads=self.num_heads,
                                  implementation=self.attention_impl)
        out = nn.Dense(c, dtype=self.dtype, name="to_out.0")(out)
        return x + out.reshape(b, h, w, c)


class MidBlock(nn.Module):
    """resnet → attention → resnet at the lowest resolution (`UNetMidBlock2D`)."""

    groups: int
    act_fn: str
    add_attention: bool = True
    attention_impl: str | None = None
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        resnet = nn.remat(ResnetBlock2D) if self.remat else ResnetBlock2D
        c = x.shape[-1]
        x = resnet(c, self.groups, self.act_fn, self.dtype, name="resnets.0")(x)
        if self.add_attention:
            x = SpatialSelfAttention(self.groups, 1, self.attention_impl, self.dtype,
                                     name="attentions.0")(x)
        return resnet(c, self.groups, self.act_fn, self.dtype, name="resnets.1")(x)


class Downsample(nn.Module):
    """Stride-2 3×3 conv after zero padding only bottom and right (diffusers pads
    (0, 1, 0, 1) then convolves without padding), so H and W halve exactly."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return _conv(x.shape[-1], 3, "conv", self.dtype, stride=2,
                     padding=((0, 1), (0, 1)))(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return _conv(x.shape[-1], 3, "conv", self.dtype)(x)


class ResnetStage(nn.Module):
    """`num_layers` resnets at one width, then an optional resampler
    (DownEncoderBlock2D / UpDecoderBlock2D)."""

    out_channels: int
    num_layers: int
    groups: int
    act_fn: str
    resample: str | None = None  # "down", "up" or None
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        resnet = nn.remat(ResnetBlock2D) if self.remat else ResnetBlock2D
        for i in range(self.num_layers):
            x = resnet(self.out_channels, self.groups, self.act_fn, self.dtype,
                       name=f"resnets.{i}")(x)
        if self.resample == "down":
            x = Downsample(self.dtype, name="downsamplers.0")(x)
        elif self.resample == "up":
            x = Upsample(self.dtype, name="upsamplers.0")(x)
        return x


class Encoder(nn.Module):
    """Image [B, H, W, in] → Gaussian moments [B, H/f, W/f, 2·latent] (before quant_conv)."""

    config: VAEConfig
    attention_impl: str | None = None
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        c = self.config
        chans = c.block_out_channels
        x = _conv(chans[0], 3, "conv_in", self.dtype)(x.astype(self.dtype))
        for i, ch in enumerate(chans):
            last = i == len(chans) - 1
            x = ResnetStage(ch, c.layers_per_block, c.norm_num_groups, c.act_fn,
                            None if last else "down", self.remat, self.dtype,
                            name=f"down_blocks.{i}")(x)
        x = MidBlock(c.norm_num_groups, c.act_fn, c.mid_block_add_attention,
                     self.attention_impl, self.remat, self.dtype, name="mid_block")(x)
        x = _ACTIVATIONS[c.act_fn](_group_norm(x, c.norm_num_groups, "conv_norm_out",
                                               self.dtype))
        return _conv(2 * c.latent_channels, 3, "conv_out", self.dtype)(x)


class Decoder(nn.Module):
    """Latent [B, h, w, latent] → image [B, h·f, w·f, out]."""

    config: VAEConfig
    attention_impl: str | None = None
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
        c = self.config
        chans = tuple(reversed(c.block_out_channels))
        x = _conv(chans[0], 3, "conv_in", self.dtype)(z.astype(self.dtype))
        x = MidBlock(c.norm_num_groups, c.act_fn, c.mid_block_add_attention,
                     self.attention_impl, self.remat, self.dtype, name="mid_block")(x)
        for i, ch in enumerate(chans):
            last = i == len(chans) - 1
            x = ResnetStage(ch, c.layers_per_block + 1, c.norm_num_groups, c.act_fn,
                            None if last else "up", self.remat, self.dtype,
                            name=f"up_blocks.{i}")(x)
        x = _ACTIVATIONS[c.act_fn](_group_norm(x, c.norm_num_groups, "conv_norm_out",
                                               self.dtype))
        return _conv(c.out_channels, 3, "conv_out", self.dtype)(x)


class AutoencoderKL(nn.Module):
    """encoder → quant_conv → (mean, logvar);  z → post_quant_conv → decoder.

    dtype is the compute dtype (params stay float32); outputs are float32.
    attention_impl: None (XLA) or "cudnn" for the mid-block attention.
    """

    config: VAEConfig
    dtype: Any = jnp.float32
    attention_impl: str | None = None
    remat: bool = False

    def setup(self):
        c = self.config
        self.encoder = Encoder(c, self.attention_impl, self.remat, self.dtype)
        self.decoder = Decoder(c, self.attention_impl, self.remat, self.dtype)
        self.quant_conv = (_conv(2 * c.latent_channels, 1, None, self.dtype)
                           if c.use_quant_conv else None)
        self.post_quant_conv = (_conv(c.latent_channels, 1, None, self.dtype)
                                if c.use_post_quant_conv else None)

    def encode(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Images [B, H, W, C] in [-1, 1] → (mean, logvar), each [B, H/f, W/f, latent],
        float32, logvar clipped to [-30, 20] as diffusers does."""
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z: jnp.ndarray) -> jnp.ndarray:
        """Unscaled latents [B, h, w, latent] → images [B, h·f, w·f, C], float32."""
        z = z.astype(self.dtype)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z).astype(jnp.float32)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Reconstruction through the posterior mean (deterministic)."""
        return self.decode(self.encode(x)[0])


def rename_legacy_keys(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Maps pre-0.14 diffusers attention names (query/key/value/proj_attn) to the
    current ones; other keys pass through."""
    out = {}
    for key, value in state.items():
        if ".attentions." in key:
            for old, new in _LEGACY_ATTENTION_NAMES.items():
                key = key.replace(old, new)
        out[key] = value
    return out


def init_shapes(module: AutoencoderKL) -> Any:
    """The params pytree of `module` as ShapeDtypeStructs (no compute, no memory)."""
    side = 2 * module.config.downsample_factor
    x = jnp.zeros((1, side, side, module.config.in_channels), jnp.float32)
    return jax.eval_shape(module.init, jax.random.PRNGKey(0), x)["params"]


def load_vae(folder: str, *, dtype: Any = jnp.float32, remat: bool = False,
             attention_impl: str | None = None) -> tuple[AutoencoderKL, Any]:
    """(module, float32 params) from a diffusers `vae` folder (config.json + safetensors)."""
    config = VAEConfig.from_diffusers_config(convert.load_config(folder))
    module = AutoencoderKL(config, dtype=dtype, attention_impl=attention_impl, remat=remat)
    state = rename_legacy_keys(convert.load_state_dict(folder))
    params = convert.convert_state_dict(state, init_shapes(module), what="VAE")
    return module, jax.tree_util.tree_map(jnp.asarray, params)
