"""Fused GroupNorm → FiLM → SiLU: one Pallas (Triton) kernel for the forward, one for the backward.

    a = (x − μ_g) · rstd_g · γ + β          GroupNorm, statistics per (sample, group) in float32
    u = a · (1 + s) + t                     FiLM, s and t per (sample, channel); optional
    y = u · sigmoid(u)                      SiLU

x is channels-last, [..., H, W, C]: every leading index (batch, frame) is one "sample" with
its own statistics over H, W and the C/G channels of a group, exactly `layers.FrameGroupNorm`
(one-pass variance E[x²] − μ², clamped at 0; ε inside the rsqrt). s and t are [..., C], one
row per sample (the VDM ResBlock's FiLM is per batch element and frame).

Forward kernel: one program per sample. Pass 1 reads the sample's [H·W, C] slab once and
accumulates per-channel Σx and Σx² in float32; the groups are folded in registers; pass 2
reads the slab again and writes y. It keeps μ and rstd ([samples, G], float32) for the
backward. Backward kernel, also one program per sample: pass 1 recomputes n = (x − μ)·rstd,
u and du = dy · silu'(u) from x and dy and accumulates the per-channel sums P1 = Σ du and
P2 = Σ du·n; pass 2 writes

    dx = rstd · (du·w − mean_g(du·w) − n · mean_g(du·w·n)),   w = (1 + s) · γ,

whose group means are Σ_{c∈g} w_c·P1_c / count and Σ_{c∈g} w_c·P2_c / count. The parameter
gradients are then tiny [samples, C] reductions in plain JAX on P1 and P2:
dt = P1, ds = γ·P2 + β·P1, dβ = Σ_samples (1 + s)·P1, dγ = Σ_samples (1 + s)·P2.

Triton needs power-of-two block shapes: a tile is [rows, G', K'] with G' and K' the group
count and the channels per group rounded up to powers of two, padded lanes masked off (so
C = 192 = 32 × 6 runs with 25 % idle lanes), and H·W of any size (the last row block is
masked). `supported` says which shapes the kernel takes; `fused` falls back to `reference`
(pure JAX, the maths of the current block) on CPU and TPU, for unsupported shapes, and under
a multi-device mesh (the Triton custom call is not partitionable by XLA: it would need a
shard_map wrapper).

The float32 maths inside the kernel rounds once, at the output; the reference rounds the
normalised activation to the compute dtype before FiLM and SiLU (as the block does), so in
bfloat16 the two differ by bf16 rounding (≈ 1e-2 relative), in float32 by ≈ 1e-6.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

IMPLS = ("off", "on", "interpret")  # resolved values (vdiff.runtime.fused_norm)
DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
DEFAULT_BLOCK_ELEMS = 4096  # elements of one [rows, G', K'] tile (Triton's register budget)
MAX_PADDED_CHANNELS = 4096  # G'·K' above this: one row of the tile would not fit


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def supported(shape: tuple[int, ...], groups: int, dtype: Any = jnp.float32) -> bool:
    """Whether the Pallas kernel takes an activation of this shape and dtype ([..., H, W, C])."""
    if len(shape) < 3 or groups < 1 or shape[-1] % groups or min(shape) < 1:
        return False
    if jnp.dtype(dtype) not in [jnp.dtype(d) for d in DTYPES]:
        return False
    return _pow2(groups) * _pow2(shape[-1] // groups) <= MAX_PADDED_CHANNELS


def reference(x: jax.Array, gamma: jax.Array, beta: jax.Array,
              film_scale: jax.Array | None = None, film_shift: jax.Array | None = None, *,
              groups: int, eps: float = 1e-6, out_dtype: Any = None) -> jax.Array:
    """silu(film(groupnorm(x))) in plain JAX, the same operations as `layers.FrameGroupNorm`
    followed by the ResBlock's FiLM and SiLU: float32 statistics and affine, the result cast
    to `out_dtype` (default x.dtype), FiLM and SiLU in that dtype."""
    out_dtype = x.dtype if out_dtype is None else out_dtype
    c = x.shape[-1]
    xf = x.astype(jnp.float32)
    spatial = (x.ndim - 3, x.ndim - 2)
    lead = x.shape[:-3]
    count = x.shape[-3] * x.shape[-2] * (c // groups)
    group_sum = lambda v: jnp.sum(v.reshape(*lead, groups, c // groups), axis=-1)  # noqa: E731
    mean = group_sum(jnp.sum(xf, axis=spatial)) / count
    mean_sq = group_sum(jnp.sum(xf * xf, axis=spatial)) / count
    var = jnp.maximum(mean_sq - mean * mean, 0.0)
    inv = jnp.repeat(lax.rsqrt(var + eps), c // groups, axis=-1)
    mean = jnp.repeat(mean, c // groups, axis=-1)
    h = (xf - mean[..., None, None, :]) * (inv * gamma)[..., None, None, :] + beta
    h = h.astype(out_dtype)
    if film_scale is not None:
        h = h * (1.0 + film_scale[..., None, None, :]) + film_shift[..., None, None, :]
    return jax.nn.silu(h)


# --------------------------------------------------------------------------------------------
# Kernels


@dataclasses.dataclass(frozen=True)
class _Config:
    groups: int
    eps: float
    out_dtype: Any  # a numpy dtype (hashable)
    interpret: bool
    block_elems: int
    num_warps: int | None
    num_stages: int | None


def _tiling(hw: int, c: int, cfg: _Config) -> tuple[int, int, int, int]:
    """(G', K', rows, num_warps) for a [H·W, C] slab: power-of-two tile dims."""
    gp, kp = _pow2(cfg.groups), _pow2(c // cfg.groups)
    rows = min(max(1, cfg.block_elems // (gp * kp)), _pow2(hw))
    warps = cfg.num_warps or min(max(rows * gp * kp // 256, 1), 8)
    return gp, kp, rows, warps


def _channel_index(c: int, groups: int, gp: int, kp: int):
    """Channel index [G', K'] of tile lane (g, k) and its validity mask."""
    g = jnp.arange(gp)[:, None]
    k = jnp.arange(kp)[None, :]
    cg = c // groups
    return g * cg + k, (g < groups) & (k < cg)


def _load_tile(ref, i, rows, chan, cmask, policy):
    """Rows [i·rows, (i+1)·rows) of a [H·W, C] ref as a float32 [rows, G', K'] tile + mask."""
    r = i * rows + jnp.arange(rows)
    mask = (r < ref.shape[0])[:, None, None] & cmask[None]
    v = plt.load(ref.at[r[:, None, None], chan[None]], mask=mask, other=0.0,
                 eviction_policy=policy)
    return v.astype(jnp.float32), r, mask


def _load_channels(ref, chan, cmask, other=0.0):
    return plt.load(ref.at[chan], mask=cmask, other=other).astype(jnp.float32)


def _film(film_refs, chan, cmask, like):
    """(1 + s, t) as [G', K'] float32, or (1, 0) without FiLM."""
    if not film_refs:
        return jnp.ones_like(like), jnp.zeros_like(like)
    scale_ref, shift_ref = film_refs
    return 1.0 + _load_channels(scale_ref, chan, cmask), _load_channels(shift_ref, chan, cmask)


def _forward_kernel(x_ref, gamma_ref, beta_ref, *refs, groups, eps, rows, gp, kp, has_film):
    film_refs, (y_ref, mean_ref, rstd_ref) = refs[:2 * has_film], refs[2 * has_film:]
    hw, c = x_ref.shape
    chan, cmask = _channel_index(c, groups, gp, kp)
    steps = pl.cdiv(hw, rows)

    def stats(i, acc):  # pass 1: Σx, Σx² per lane; keep the slab in L2 for pass 2
        x, _, _ = _load_tile(x_ref, i, rows, chan, cmask, "evict_last")
        return acc[0] + x, acc[1] + x * x

    zeros = jnp.zeros((rows, gp, kp), jnp.float32)
    s, ss = lax.fori_loop(0, steps, stats, (zeros, zeros))
    count = hw * (c // groups)
    mean = s.sum(axis=0).sum(axis=1) / count  # [G']
    var = jnp.maximum(ss.sum(axis=0).sum(axis=1) / count - mean * mean, 0.0)
    rstd = lax.rsqrt(var + eps)
    gidx = jnp.arange(gp)
    plt.store(mean_ref.at[gidx], mean, mask=gidx < groups)
    plt.store(rstd_ref.at[gidx], rstd, mask=gidx < groups)

    gamma = _load_channels(gamma_ref, chan, cmask)
    beta = _load_channels(beta_ref, chan, cmask)
    s1, t = _film(film_refs, chan, cmask, gamma)
    # u = (x − μ)·rstd·γ·(1 + s) + β·(1 + s) + t: one subtract and one fma per element,
    # without the cancellation of x·A + (B − μ·A) when |μ| ≫ std.
    mul = (rstd[:, None] * gamma * s1)[None]
    add = (beta * s1 + t)[None]
    mean3 = mean[None, :, None]

    @pl.loop(0, steps)
    def _(i):  # pass 2: normalise, FiLM, SiLU, write
        x, r, mask = _load_tile(x_ref, i, rows, chan, cmask, "evict_first")
        u = (x - mean3) * mul + add
        y = u * jax.nn.sigmoid(u)
        plt.store(y_ref.at[r[:, None, None], chan[None]], y.astype(y_ref.dtype), mask=mask)


def _backward_kernel(x_ref, dy_ref, gamma_ref, beta_ref, *refs, groups, rows, gp, kp,
                     has_film):
    film_refs = refs[:2 * has_film]
    mean_ref, rstd_ref, dx_ref, p1_ref, p2_ref = refs[2 * has_film:]
    hw, c = x_ref.shape
    chan, cmask = _channel_index(c, groups, gp, kp)
    steps = pl.cdiv(hw, rows)
    gidx = jnp.arange(gp)
    mean = plt.load(mean_ref.at[gidx], mask=gidx < groups, other=0.0)[None, :, None]
    rstd = plt.load(rstd_ref.at[gidx], mask=gidx < groups, other=0.0)[None, :, None]
    gamma = _load_channels(gamma_ref, chan, cmask)
    beta = _load_channels(beta_ref, chan, cmask)
    s1, t = _film(film_refs, chan, cmask, gamma)
    mul = rstd * (gamma * s1)[None]
    add = (beta * s1 + t)[None]
    w = (gamma * s1)[None]  # d u / d n

    def recompute(i, policy):
        x, r, mask = _load_tile(x_ref, i, rows, chan, cmask, policy)
        dy, _, _ = _load_tile(dy_ref, i, rows, chan, cmask, policy)
        xc = x - mean
        u = xc * mul + add
        sig = jax.nn.sigmoid(u)
        du = dy * sig * (1.0 + u * (1.0 - sig))  # silu'(u) = σ(u)·(1 + u·(1 − σ(u)))
        return xc * rstd, du, r, mask

    def sums(i, acc):  # pass 1: P1 = Σ du, P2 = Σ du·n per lane
        n, du, _, _ = recompute(i, "evict_last")
        return acc[0] + du, acc[1] + du * n

    zeros = jnp.zeros((rows, gp, kp), jnp.float32)
    p1, p2 = lax.fori_loop(0, steps, sums, (zeros, zeros))
    p1, p2 = p1.sum(axis=0), p2.sum(axis=0)  # [G', K']
    plt.store(p1_ref.at[chan], p1, mask=cmask)
    plt.store(p2_ref.at[chan], p2, mask=cmask)
    count = hw * (c // groups)
    c1 = ((w[0] * p1).sum(axis=1) / count)[None, :, None]  # mean_g(dn)
    c2 = ((w[0] * p2).sum(axis=1) / count)[None, :, None]  # mean_g(dn·n)

    @pl.loop(0, steps)
    def _(i):  # pass 2: dx
        n, du, r, mask = recompute(i, "evict_first")
        dx = rstd * (du * w - c1 - n * c2)
        plt.store(dx_ref.at[r[:, None, None], chan[None]], dx.astype(dx_ref.dtype), mask=mask)


def _per_sample(shape):  # BlockSpec of one sample's slice of a [samples, *shape] array
    zeros = (0,) * len(shape)
    return pl.BlockSpec((pl.squeezed, *shape), lambda i: (i, *zeros))


def _whole(shape):
    zeros = (0,) * len(shape)
    return pl.BlockSpec(shape, lambda i: zeros)


def _pallas_forward(x3, gamma, beta, film, cfg: _Config):
    n, hw, c = x3.shape
    gp, kp, rows, warps = _tiling(hw, c, cfg)
    kernel = functools.partial(_forward_kernel, groups=cfg.groups, eps=cfg.eps, rows=rows,
                               gp=gp, kp=kp, has_film=bool(film))
    stats = jax.ShapeDtypeStruct((n, cfg.groups), jnp.float32)
    return pl.pallas_call(
        kernel,
        grid=(n,),
        in_specs=[_per_sample((hw, c)), _whole((c,)), _whole((c,))]
        + [_per_sample((c,))] * len(film),
        out_specs=[_per_sample((hw, c)), _per_sample((cfg.groups,)),
                   _per_sample((cfg.groups,))],
        out_shape=[jax.ShapeDtypeStruct((n, hw, c), cfg.out_dtype), stats, stats],
        compiler_params=plt.CompilerParams(num_warps=warps, num_stages=cfg.num_stages),
        interpret=cfg.interpret,
        name="group_norm_film_silu_fwd",
    )(x3, gamma, beta, *film)


def _pallas_backward(x3, dy3, gamma, beta, film, mean, rstd, cfg: _Config):
    n, hw, c = x3.shape
    gp, kp, rows, warps = _tiling(hw, c, cfg)
    kernel = functools.partial(_backward_kernel, groups=cfg.groups, rows=rows, gp=gp, kp=kp,
                               has_film=bool(film))
    partial = jax.ShapeDtypeStruct((n, c), jnp.float32)
    return pl.pallas_call(
        kernel,
        grid=(n,),
        in_specs=[_per_sample((hw, c)), _per_sample((hw, c)), _whole((c,)), _whole((c,))]
        + [_per_sample((c,))] * len(film)
        + [_per_sample((cfg.groups,)), _per_sample((cfg.groups,))],
        out_specs=[_per_sample((hw, c)), _per_sample((c,)), _per_sample((c,))],
        out_shape=[jax.ShapeDtypeStruct((n, hw, c), x3.dtype), partial, partial],
        compiler_params=plt.CompilerParams(num_warps=warps, num_stages=cfg.num_stages),
        interpret=cfg.interpret,
        name="group_norm_film_silu_bwd",
    )(x3, dy3, gamma, beta, *film, mean, rstd)


def _as_samples(x, film_scale, film_shift):
    n = int(np.prod(x.shape[:-3], dtype=np.int64))
    x3 = x.reshape(n, x.shape[-3] * x.shape[-2], x.shape[-1])
    film = () if film_scale is None else (film_scale.reshape(n, -1), film_shift.reshape(n, -1))
    return x3, film


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _fused_op(x, gamma, beta, film_scale, film_shift, cfg: _Config):
    return _fused_fwd(x, gamma, beta, film_scale, film_shift, cfg)[0]


def _fused_fwd(x, gamma, beta, film_scale, film_shift, cfg: _Config):
    x3, film = _as_samples(x, film_scale, film_shift)
    y, mean, rstd = _pallas_forward(x3, gamma, beta, film, cfg)
    return y.reshape(x.shape), (x, gamma, beta, film_scale, film_shift, mean, rstd)


def _fused_bwd(cfg: _Config, res, dy):
    x, gamma, beta, film_scale, film_shift, mean, rstd = res
    x3, film = _as_samples(x, film_scale, film_shift)
    dx, p1, p2 = _pallas_backward(x3, dy.reshape(x3.shape), gamma, beta, film, mean, rstd, cfg)
    g32, b32 = gamma.astype(jnp.float32), beta.astype(jnp.float32)
    if film_scale is None:
        dgamma, dbeta, dscale, dshift = p2.sum(0), p1.sum(0), None, None
    else:
        s1 = 1.0 + film[0].astype(jnp.float32)
        dgamma, dbeta = (s1 * p2).sum(0), (s1 * p1).sum(0)
        dscale = (g32 * p2 + b32 * p1).reshape(film_scale.shape).astype(film_scale.dtype)
        dshift = p1.reshape(film_shift.shape).astype(film_shift.dtype)
    return (dx.reshape(x.shape), dgamma.astype(gamma.dtype), dbeta.astype(beta.dtype),
            dscale, dshift)


_fused_op.defvjp(_fused_fwd, _fused_bwd)


def _out_dtype(x, film_scale, film_shift, out_dtype):
    """The reference's output dtype: FiLM in `out_dtype` promotes with the FiLM arrays."""
    out_dtype = x.dtype if out_dtype is None else out_dtype
    if film_scale is not None:
        out_dtype = jnp.result_type(out_dtype, film_scale.dtype, film_shift.dtype)
    return np.dtype(out_dtype)


def group_norm_film_silu(x: jax.Array, gamma: jax.Array, beta: jax.Array,
                         film_scale: jax.Array | None = None,
                         film_shift: jax.Array | None = None, *, groups: int,
                         eps: float = 1e-6, out_dtype: Any = None, interpret: bool = False,
                         block_elems: int = DEFAULT_BLOCK_ELEMS,
                         num_warps: int | None = None,
                         num_stages: int | None = None) -> jax.Array:
    """silu(film(groupnorm(x))) through the Pallas kernels (differentiable: custom VJP).

    x: [..., H, W, C] (statistics per leading index); gamma, beta: [C]; film_scale,
    film_shift: [..., C] broadcastable to x.shape[:-3] + (C,), or both None (no FiLM).
    Raises ValueError for shapes `supported` rejects; use `fused` to fall back instead.
    block_elems (a power of two): elements of one [rows, G', K'] tile; num_warps (default:
    tile/256, in [1, 8]) and num_stages (default: Triton's 3) go to the Triton compiler.
    """
    if not supported(x.shape, groups, x.dtype):
        raise ValueError(f"fused GroupNorm does not support shape {x.shape}, dtype {x.dtype}, "
                         f"groups {groups}")
    if (film_scale is None) != (film_shift is None):
        raise ValueError("pass both film_scale and film_shift, or neither")
    if block_elems < 1 or block_elems != _pow2(block_elems):
        raise ValueError(f"block_elems={block_elems} must be a power of two (Triton)")
    if film_scale is not None:  # a broadcast here is tiny ([..., C]) and autodiff sums it back
        lead = x.shape[:-3] + x.shape[-1:]
        film_scale, film_shift = (jnp.broadcast_to(film_scale, lead),
                                  jnp.broadcast_to(film_shift, lead))
    cfg = _Config(groups, float(eps), _out_dtype(x, film_scale, film_shift, out_dtype),
                  bool(interpret), int(block_elems), num_warps, num_stages)
    return _fused_op(x, gamma, beta, film_scale, film_shift, cfg)


def _single_device() -> bool:
    mesh = jax.sharding.get_abstract_mesh()
    return mesh.empty or mesh.size <= 1


def fused(x: jax.Array, gamma: jax.Array, beta: jax.Array,
          film_scale: jax.Array | None = None, film_shift: jax.Array | None = None, *,
          groups: int, eps: float = 1e-6, out_dtype: Any = None,
          impl: str = "on") -> jax.Array:
    """silu(film(groupnorm(x))): the Pallas kernel where `impl` asks for it and it applies.

    impl 'on': the Pallas kernel on GPU for `supported` shapes outside multi-device meshes,
    else `reference`; 'interpret': the kernel in Pallas interpret mode on any backend (tests;
    slow); 'off': `reference`.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl {impl!r} not in {IMPLS}")
    kernel = (impl == "interpret" or (impl == "on" and jax.default_backend() == "gpu"
                                      and _single_device()))
    if kernel and supported(x.shape, groups, x.dtype):
        return group_norm_film_silu(x, gamma, beta, film_scale, film_shift, groups=groups,
                                    eps=eps, out_dtype=out_dtype,
                                    interpret=impl == "interpret")
    return reference(x, gamma, beta, film_scale, film_shift, groups=groups, eps=eps,
                     out_dtype=out_dtype)
