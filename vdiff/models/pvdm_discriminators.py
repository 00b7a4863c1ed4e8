"""PatchGAN discriminators for PVDM's autoencoder, per frame (2D) and per clip (3D).

PVDM trains its autoencoder with L1 + LPIPS reconstruction and, later in training, an
adversarial term from a frame discriminator and a clip discriminator (the latter judges
motion, which per-frame losses cannot see). Both are PatchGANs (Isola et al. 2017): a
stack of 4×4 stride-2 convolutions whose output is a map of logits, each judging one
receptive-field patch, so the adversarial signal stays local and texture-focused.

Layout with c = base_channels, L = num_layers, SAME padding throughout:

    conv 4×4 /2 → c,             leaky ReLU(0.2)
    conv 4×4 /2 → c·min(2^l, 8), GroupNorm, leaky ReLU      (l = 1 … L−1)
    conv 4×4 /1 → c·min(2^L, 8), GroupNorm, leaky ReLU
    conv 4×4 /1 → 1 logit per patch

so a frame of H×W gives ⌈H/2^L⌉×⌈W/2^L⌉ logits. GroupNorm replaces pix2pix's BatchNorm
because it has no batch statistics: it behaves identically at batch 1, under sharding and
at evaluation. The 3D variant halves time only while more than one frame remains, so short
clips (even a single frame) pass through without a zero-length axis.

Losses are the hinge losses of Lim & Ye (2017) / SAGAN:

    L_D = E[relu(1 − D(x_real))] + E[relu(1 + D(x_fake))],    L_G = −E[D(x_fake)].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from vdiff.nn import partitioning as P
from vdiff.nn.layers import default_init, num_groups_for

LEAK = 0.2


class _PatchGAN(nn.Module):
    """The conv stack shared by both discriminators, over any number of spatial axes."""

    base_channels: int
    num_layers: int
    kernel: Sequence[int]
    time_stride: bool  # the first spatial axis is time: halve it only while it is > 1
    dtype: Any

    def _conv(self, x: jnp.ndarray, features: int, stride: int, name: str) -> jnp.ndarray:
        strides = [stride] * len(self.kernel)
        if self.time_stride and x.shape[1] == 1:
            strides[0] = 1
        axes = (None,) * len(self.kernel) + (P.EMBED, P.MLP)
        return nn.Conv(features, tuple(self.kernel), strides=tuple(strides), padding="SAME",
                       dtype=self.dtype, name=name,
                       kernel_init=P.partitioned(default_init, axes))(x)

    def _norm(self, x: jnp.ndarray, name: str) -> jnp.ndarray:
        # Statistics in float32 even under bf16 compute.
        out = nn.GroupNorm(num_groups=num_groups_for(x.shape[-1]), dtype=jnp.float32,
                           name=name)(x.astype(jnp.float32))
        return nn.leaky_relu(out, LEAK).astype(self.dtype)

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        h = nn.leaky_relu(self._conv(x.astype(self.dtype), self.base_channels, 2, "conv_0"), LEAK)
        for level in range(1, self.num_layers):
            features = self.base_channels * min(2 ** level, 8)
            h = self._norm(self._conv(h, features, 2, f"conv_{level}"), f"norm_{level}")
        features = self.base_channels * min(2 ** self.num_layers, 8)
        h = self._norm(self._conv(h, features, 1, f"conv_{self.num_layers}"),
                       f"norm_{self.num_layers}")
        return self._conv(h, 1, 1, "logits")[..., 0].astype(jnp.float32)


class PatchDiscriminator2D(nn.Module):
    """Per-frame PatchGAN: video [B, S, H, W, C] → logits [B, S, ⌈H/2^L⌉, ⌈W/2^L⌉]."""

    base_channels: int = 64
    num_layers: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, video: jnp.ndarray) -> jnp.ndarray:
        b = video.shape[0]
        frames = einops.rearrange(video, "b s h w c -> (b s) h w c")
        logits = _PatchGAN(self.base_channels, self.num_layers, (4, 4), False, self.dtype,
                           name="net")(frames)
        return einops.rearrange(logits, "(b s) h w -> b s h w", b=b)


class PatchDiscriminator3D(nn.Module):
    """Per-clip PatchGAN with t×4×4 convolutions: [B, S, H, W, C] → logits [B, s, h, w].

    Time is halved by each stride-2 level while more than one frame remains, so s is S
    divided by 2 at most num_layers times (never below 1).
    """

    base_channels: int = 64
    num_layers: int = 3
    temporal_kernel: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, video: jnp.ndarray) -> jnp.ndarray:
        return _PatchGAN(self.base_channels, self.num_layers, (self.temporal_kernel, 4, 4),
                         True, self.dtype, name="net")(video)


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    """E[relu(1 − real)] + E[relu(1 + fake)]: zero once real ≥ 1 and fake ≤ −1 (margin)."""
    real = jnp.mean(jax.nn.relu(1.0 - logits_real.astype(jnp.float32)))
    fake = jnp.mean(jax.nn.relu(1.0 + logits_fake.astype(jnp.float32)))
    return real + fake


def hinge_g_loss(logits_fake: jax.Array) -> jax.Array:
    """−E[fake]: unbounded, so the generator is pushed even where the critic is saturated."""
    return -jnp.mean(logits_fake.astype(jnp.float32))
