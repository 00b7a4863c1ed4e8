"""PVDM's latent denoiser: one 2D UNet shared by the three planes of a triplane latent.

Yu et al., "Video Probabilistic Diffusion Models in Projected Latent Space" (CVPR 2023).
A clip's latent is three image-like planes (`vdiff.models.triplane`)

    z = (z^s, z^h, z^w),  z^s ∈ ℝ^{B×H′×W′×C},  z^h ∈ ℝ^{B×S×W′×C},  z^w ∈ ℝ^{B×S×H′×C}.

The denoiser ε_θ is a 2D UNet whose convolutional layers f_θ act on every plane with the
same weights,

    f_θ(z) = (f_θ(z^s), f_θ(z^h), f_θ(z^w)),

so the planes are treated as three images of different sizes. Convolutions, GroupNorm
(statistics per plane) and down/upsampling never mix planes; only the attention layers
do. There, the N = H′W′ + SW′ + SH′ positions of all three planes form one sequence:

    t   = [GN(z^s) + e_s ; GN(z^h) + e_h ; GN(z^w) + e_w] ∈ ℝ^{B×N×C}
    z^k ← z^k + Attn(t)|_k                         (k ∈ {s, h, w})

with e_k ∈ ℝ^C a learned per-plane embedding (initialised to zero) so a query can tell
the planes apart. A token of z^s at (i, j) thus sees z^h at every (t, j′) and z^w at
every (t, i′): the content plane and the two motion planes exchange information.

With `axis_positions` (off by default, as in the paper) each token also carries fixed
sin/cos features of its coordinates, one channel group per video axis (height i, width j,
time t), zero in the group of the axis its plane does not span:

    z^s(i, j) + [p(i), p(j), 0],   z^h(t, j) + [0, p(j), p(t)],   z^w(t, i) + [p(i), 0, p(t)]

so the tokens that describe the same column j of the clip (z^s(·, j) and z^h(·, j)) share
features, and attention can align the planes by position rather than guessing it from
content and zero padding (the paper's UNet has no positional signal in attention). On
moving digits it changed nothing measurable after 1,000 steps (docs/results.md, PVDM).

With `plane_inputs` (on in `pvdm_defaults`) three constant one-hot channels naming the plane
(s, h, w) join the input before the first convolution. Without them the convolutions compute
the same function on every plane, so where z carries no plane-specific signal (at high noise,
where z is nearly pure noise, and with equal plane sizes, as for moving digits' 8×8×8
latents) the conv path predicts the same for z^s as for z^h and z^w, though content and
motion planes have different statistics; only the zero-initialised plane embedding of the
attention layers could break the tie. The paper's UNet lays the planes side by side on one
canvas, where padding at the canvas edges gives the convolutions that cue implicitly.

Long videos are generated clip by clip, p(z_k | z_{k−1}): the previous clip's latents
`cond` are concatenated to z on channels, plane-wise, before the first convolution; the
first clip (or the unconditional branch) passes zeros. The input width is fixed at
init: a model initialised with `cond` must always be called with `cond` (zeros when there
is no previous clip), and one initialised without it must never be.

    out = TriplaneUNet(...).apply(params, z, logsnr, cond=..., labels=..., train=...)

z, cond: Triplane; logsnr: [B]; labels: int [B] with `num_classes` as the null class.
out: Triplane (float32) with `out_channels` channels per plane and z's spatial shapes.

Plane sides need not be powers of two: stride-2 SAME downsampling rounds up (n → ⌈n/2⌉)
and each upsampled map (2⌈n/2⌉ ≥ n) is cropped back to its skip connection's size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vdiff.models.triplane import Triplane, concat_channels, from_tokens, to_tokens
from vdiff.nn import partitioning as P
from vdiff.nn.attention import HeadsAttention
from vdiff.nn.embeddings import ConditioningEmbedding, sinusoidal_embedding
from vdiff.nn.layers import Downsample, FrameGroupNorm, ResBlock, SpatialConv, Upsample, zeros_init


def per_plane(fn: Callable[[jax.Array], jax.Array], planes: Triplane) -> Triplane:
    """Applies a video layer to each plane seen as a one-frame clip [B, 1, H, W, C].

    Calling one flax submodule instance three times reuses its parameters, which is
    exactly PVDM's weight sharing across planes.
    """
    return Triplane(*(fn(p[:, None])[:, 0] for p in planes))


def check_planes(planes: Any, what: str) -> tuple[int, int, int, int, int]:
    """Validates a triplane and returns (B, S, H′, W′, C).

    Shapes must come from one clip: s = [B, H′, W′, C], h = [B, S, W′, C],
    w = [B, S, H′, C]. Swapped or mis-sized planes would otherwise run silently, since
    the shared UNet accepts any image size.
    """
    if not isinstance(planes, Triplane):
        raise ValueError(f"{what} must be a Triplane(s, h, w), got {type(planes).__name__}")
    shapes = [tuple(p.shape) for p in planes]
    if any(len(sh) != 4 for sh in shapes):
        raise ValueError(f"{what} planes must be [B, H, W, C]; got shapes {shapes}")
    if len({sh[0] for sh in shapes}) != 1:
        raise ValueError(f"{what} planes have different batch sizes: {shapes}")
    if len({sh[-1] for sh in shapes}) != 1:
        raise ValueError(f"{what} planes have different channel counts: {shapes}")
    (b, hp, wp, c), (_, s_h, wp_h, _), (_, s_w, hp_w, _) = shapes
    if wp_h != wp or hp_w != hp or s_h != s_w:
        raise ValueError(
            f"{what} planes are not the projections of one clip: expected s=[B, H′, W′, C], "
            f"h=[B, S, W′, C], w=[B, S, H′, C]; got s={shapes[0]}, h={shapes[1]}, w={shapes[2]}")
    return b, s_h, hp, wp, c


class TriplaneResBlock(nn.Module):
    """One ResBlock applied to the three planes with shared weights.

    A module of its own (rather than a loop in the UNet) so that `nn.remat` can wrap the
    work of all three planes at once; `train` is positional so remat can keep it static.
    """

    features: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, planes: Triplane, emb: jax.Array, train: bool = False) -> Triplane:
        block = ResBlock(self.features, self.dropout, self.dtype)
        return per_plane(lambda p: block(p, emb, train=train), planes)


def axis_position_features(planes: Triplane, max_period: float = 16.0) -> Triplane:
    """Fixed [1, a, b, C] features per plane: sin/cos of each coordinate in its axis's
    channel group (height, width, time: C // 3 channels each, rounded down to even; the
    remaining channels stay zero), zero in the group of the axis the plane lacks."""
    _, s, h, w, c = check_planes(planes, "planes")
    g = (c // 3) // 2 * 2
    if g == 0:
        return Triplane(*(jnp.zeros((1, *p.shape[1:]), jnp.float32) for p in planes))

    def axis(n: int, group: int) -> jax.Array:  # [n, C]: features of 0..n−1 in `group`
        f = sinusoidal_embedding(jnp.arange(n, dtype=jnp.float32), g, max_period=max_period)
        return jnp.pad(f, ((0, 0), (group * g, c - (group + 1) * g)))

    ph, pw, pt = axis(h, 0), axis(w, 1), axis(s, 2)
    return Triplane(s=(ph[:, None] + pw[None, :])[None],   # [1, H′, W′, C]
                    h=(pt[:, None] + pw[None, :])[None],   # [1, S, W′, C]
                    w=(pt[:, None] + ph[None, :])[None])   # [1, S, H′, C]


class TriplaneAttention(nn.Module):
    """Residual self-attention over the joint token sequence of all three planes.

    The output projection of `HeadsAttention` is zero-initialised, so a fresh layer is
    exactly the identity and training starts from the purely convolutional UNet.
    """

    head_dim: int = 64
    implementation: str | None = None
    dtype: Any = jnp.float32
    axis_positions: bool = False

    @nn.compact
    def __call__(self, planes: Triplane) -> Triplane:
        channels = planes.s.shape[-1]
        norm = FrameGroupNorm(self.dtype)
        # Zeros: planes start indistinguishable (attention is symmetric in them) and learn
        # their identity once the output projection moves away from zero.
        plane_embed = self.param("plane_embed", P.partitioned(zeros_init, (None, None)),
                                 (3, channels), jnp.float32)
        normed = per_plane(norm, planes)
        normed = Triplane(*(p + plane_embed[k].astype(p.dtype) for k, p in enumerate(normed)))
        if self.axis_positions:
            positions = axis_position_features(planes)
            normed = Triplane(*(p + e.astype(p.dtype) for p, e in zip(normed, positions)))
        out = HeadsAttention(self.head_dim, self.implementation, self.dtype)(to_tokens(normed))
        out = from_tokens(out, planes)
        return Triplane(*(x + o.astype(x.dtype) for x, o in zip(planes, out)))


class TriplaneUNet(nn.Module):
    """PVDM's plane-shared 2D UNet; see the module docstring for the maths and call.

    attn_levels are downsampling levels (level i works at 1/2**i of the latent size):
    the paper's attention at latent resolutions 4/2/1 (factors 1, 2, 4) is (0, 1, 2).
    """

    out_channels: int
    base_channels: int = 256
    channel_mults: Sequence[int] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_levels: Sequence[int] = (0, 1, 2)
    middle_attention: bool = True
    head_dim: int = 64
    dropout: float = 0.0
    num_classes: int = 0
    attention_impl: str | None = None  # None/'xla' or 'cudnn'
    remat: bool = False
    dtype: Any = jnp.float32
    axis_positions: bool = False  # coordinate features in attention (module docstring)
    plane_inputs: bool = True  # one-hot plane identity channels at the input (docstring)

    def _res_block(self, features: int, name: str) -> TriplaneResBlock:
        cls = nn.remat(TriplaneResBlock, static_argnums=(3,)) if self.remat else TriplaneResBlock
        return cls(features, self.dropout, self.dtype, name=name)

    def _attention(self, name: str) -> TriplaneAttention:
        return TriplaneAttention(self.head_dim, self.attention_impl, self.dtype,
                                 self.axis_positions, name=name)

    def _check_input_width(self, width: int, has_cond: bool) -> None:
        """At apply time, fail clearly when z (+cond, +plane ids) does not match conv_in's
        width."""
        if self.is_initializing() or "conv_in" not in self.variables.get("params", {}):
            return
        kernel = nn.meta.unbox(self.variables["params"]["conv_in"]["Conv_0"]["kernel"])
        expected = kernel.shape[2]
        if expected != width:
            ids = " + 3 plane ids" if self.plane_inputs else ""
            raise ValueError(
                f"z{' + cond' if has_cond else ''}{ids} has {width} channels but conv_in was "
                f"initialised for {expected}: a model initialised with cond must always be "
                "called with cond (zeros when there is no previous clip), one initialised "
                "without it never")

    @nn.compact
    def __call__(self, z: Triplane, logsnr: jax.Array, *, cond: Triplane | None = None,
                 labels: jax.Array | None = None, train: bool = False) -> Triplane:
        if any(not 0 <= level < len(self.channel_mults) for level in self.attn_levels):
            raise ValueError(f"attn_levels {tuple(self.attn_levels)} must lie in "
                             f"[0, {len(self.channel_mults)})")
        batch, *_ = check_planes(z, "z")
        if logsnr.shape != (batch,):
            raise ValueError(f"logsnr must have shape ({batch},), got {logsnr.shape}")
        x = z
        if cond is not None:
            check_planes(cond, "cond")
            for name, zp, cp in zip(Triplane._fields, z, cond):
                if zp.shape[:3] != cp.shape[:3]:
                    raise ValueError(f"cond plane {name} has shape {cp.shape}, expected "
                                     f"{zp.shape[:3]} + (channels,) to match z")
            x = concat_channels(z, Triplane(*(c.astype(z.s.dtype) for c in cond)))
        if self.plane_inputs:
            x = Triplane(*(jnp.concatenate(
                [p, jnp.broadcast_to(jax.nn.one_hot(k, 3, dtype=p.dtype), (*p.shape[:3], 3))],
                axis=-1) for k, p in enumerate(x)))
        self._check_input_width(x.s.shape[-1], cond is not None)
        x = Triplane(*(p.astype(self.dtype) for p in x))

        with jax.named_scope("conditioning"):
            emb = ConditioningEmbedding(4 * self.base_channels, self.num_classes, self.dtype)(
                logsnr, labels, 1)  # [B, 1, D]: one "frame" per plane

        h = per_plane(SpatialConv(self.base_channels, dtype=self.dtype, name="conv_in"), x)
        skips = [h]
        last = len(self.channel_mults) - 1
        for level, mult in enumerate(self.channel_mults):
            with jax.named_scope(f"down_{level}"):
                for i in range(self.num_res_blocks):
                    h = self._res_block(self.base_channels * mult, f"down_{level}_res_{i}")(
                        h, emb, train)
                    if level in self.attn_levels:
                        h = self._attention(f"down_{level}_attn_{i}")(h)
                    skips.append(h)
                if level != last:
                    h = per_plane(Downsample(self.dtype, name=f"down_{level}_downsample"), h)
                    skips.append(h)

        with jax.named_scope("middle"):
            h = self._res_block(h.s.shape[-1], "mid_res_0")(h, emb, train)
            if self.middle_attention:
                h = self._attention("mid_attn")(h)
            h = self._res_block(h.s.shape[-1], "mid_res_1")(h, emb, train)

        for level, mult in reversed(list(enumerate(self.channel_mults))):
            with jax.named_scope(f"up_{level}"):
                for i in range(self.num_res_blocks + 1):
                    h = concat_channels(h, skips.pop())
                    h = self._res_block(self.base_channels * mult, f"up_{level}_res_{i}")(
                        h, emb, train)
                    if level in self.attn_levels:
                        h = self._attention(f"up_{level}_attn_{i}")(h)
                if level != 0:
                    up = per_plane(Upsample(self.dtype, name=f"up_{level}_upsample"), h)
                    # 2⌈n/2⌉ may exceed the skip's n by one: crop back.
                    h = Triplane(*(u[:, :s.shape[1], :s.shape[2]] for u, s in zip(up, skips[-1])))
        assert not skips, "every skip connection must be consumed"

        norm_out = FrameGroupNorm(self.dtype, name="norm_out")
        h = per_plane(lambda p: nn.swish(norm_out(p)), h)
        out = per_plane(SpatialConv(self.out_channels, zero_init=True, dtype=self.dtype,
                                    name="conv_out"), h)
        return Triplane(*(p.astype(jnp.float32) for p in out))
