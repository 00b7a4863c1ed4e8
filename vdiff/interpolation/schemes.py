r"""Interpolating between two real images with a pretrained latent diffusion model.

Wang & Golland (ICML 2023), "Interpolating between Images with Diffusion Models": no
training; both images' latents are noised to a level, interpolated, and denoised.

Schemes (every one returns the latents of ``num_frames`` frames, endpoints = the inputs):

* ``interpolate_only``: slerp of the clean latents.
* ``interpolate_denoise``: both ends noised with the SAME noise ε to a per-frame level
  s_i (a noise profile, highest in the middle), z_i = slerp(α x_a + σ ε, α x_b + σ ε, t_i),
  then deterministic DDIM from s_i to 0.
* ``did`` (denoise-interpolate-denoise): a branching coarse-to-fine tree. The frames
  between the two ends (depth 0) are made from the ends at the highest level; each
  sub-interval between two produced frames gives the frames inside it at the next lower
  level, from its two bounding frames (its "parent pair"), with noise shared by the pair.

Levels are fractions of the diffusion schedule, t ∈ [0, 1] (0.3 … 0.55 by default, as
in the paper), mapped to log-SNR with the model's schedule. Denoising is DDIM on the grid
t_k = k / ddim_steps: a level s starts at k0 = round(s · ddim_steps) and makes k0 model
calls (the last one returns x̂0), as img2img does with ``strength = s``.

The model behind a scheme is a :class:`Denoiser`: ``params`` (a pytree passed to jit as
an argument, never closed over) and ``eps(params, z, logsnr, cond) -> ε̂`` where ``cond``
is a dict of per-example arrays (text contexts, control images, ...). :class:`TextDenoiser`
wraps a ``LatentDiffusion`` (classifier-free guidance, optional ControlNet); tests wrap a
closed-form Gaussian ε-predictor. Per-frame conditioning comes from ``cond_fn(frame,
position) -> dict`` (position = frame / (num_frames − 1)).

Randomness: everything derives from one key. The noise of parent pair (l, r) at depth d
for candidate c is ``normal(fold_in(fold_in(fold_in(fold_in(key, TAG), d), l), c))``;
interpolate-denoise has one parent pair (the ends). DDIM is deterministic (η = 0), so a
run is a pure function of (inputs, settings, seed).

Candidates: with ``candidates = C`` every frame is produced C times (C noises, one batch)
and ``select_fn(frame, x0_latents [C, ...]) -> int`` picks one (CLIP ranking, a forced
user choice, or candidate 0); in DID the pick is the parent of the next level.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vdiff.diffusion import samplers, targets
from vdiff.errors import ConfigError

Array = jax.Array
CondFn = Callable[[int, float], Mapping[str, Array]]
SelectFn = Callable[[int, Array], int]

SHAPES = ("linear", "convex", "concave")
SCHEMES = ("did", "interp_denoise", "interp")
_TAG_INTERP_DENOISE, _TAG_DID = 1, 2


# ----------------------------------------------------------------------------- interpolation


def lerp(a: Any, b: Any, t: Any) -> Any:
    """(1 − t) a + t b (poses, keypoints)."""
    return (1.0 - t) * a + t * b


def slerp(a: Array, b: Array, t: Any, *, dot_threshold: float = 0.9995) -> Array:
    """Spherical interpolation of whole arrays (flattened): a at t = 0, b at t = 1.

    sin((1 − t) θ)/sin θ · a + sin(t θ)/sin θ · b, θ the angle between a and b; for nearly
    parallel vectors (|cos θ| > dot_threshold) the plain lerp. Unit vectors stay unit, and
    the angle to ``a`` is t θ. ``t`` may be a scalar or a [T] vector (→ [T, *a.shape]).
    """
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    t = jnp.asarray(t, jnp.float32)
    fa, fb = a.reshape(-1), b.reshape(-1)
    na, nb = jnp.linalg.norm(fa), jnp.linalg.norm(fb)
    cos = jnp.clip(jnp.dot(fa, fb) / jnp.maximum(na * nb, 1e-30), -1.0, 1.0)
    theta = jnp.arccos(cos)
    sin = jnp.sin(theta)
    parallel = jnp.abs(cos) > dot_threshold
    safe_sin = jnp.where(parallel, 1.0, sin)
    tt = t.reshape(t.shape + (1,) * a.ndim)
    wa = jnp.where(parallel, 1.0 - tt, jnp.sin((1.0 - tt) * theta) / safe_sin)
    wb = jnp.where(parallel, tt, jnp.sin(tt * theta) / safe_sin)
    return wa * a + wb * b


# ----------------------------------------------------------------------------- noise levels


def shape_fn(x: Any, shape: str) -> np.ndarray:
    """[0, 1] → [0, 1], increasing, 0 ↦ 0 and 1 ↦ 1: linear x, convex x², concave 1 − (1 − x)²."""
    x = np.clip(np.asarray(x, np.float64), 0.0, 1.0)
    if shape == "linear":
        return x
    if shape == "convex":
        return x ** 2
    if shape == "concave":
        return 1.0 - (1.0 - x) ** 2
    raise ConfigError(f"noise profile shape {shape!r} is not one of {SHAPES}")


def _check_range(noise_min: float, noise_max: float) -> None:
    if not 0.0 <= noise_min <= noise_max <= 1.0:
        raise ConfigError(f"need 0 <= noise_min <= noise_max <= 1, got {noise_min}, "
                          f"{noise_max}")


def frame_noise_levels(num_frames: int, noise_min: float = 0.3, noise_max: float = 0.55,
                       shape: str = "linear") -> np.ndarray:
    """Per-frame level for interpolate-denoise: noise_max in the middle, noise_min next to
    the ends (x = 1 − |2 t − 1| through ``shape``); the two endpoints get 0."""
    _check_range(noise_min, noise_max)
    if num_frames < 2:
        raise ConfigError(f"num_frames must be >= 2, got {num_frames}")
    pos = np.linspace(0.0, 1.0, num_frames)
    x = 1.0 - np.abs(2.0 * pos - 1.0)
    inner = x[1:-1]
    span = inner.max() - inner.min() if len(inner) else 0.0
    # inner frames span the whole range; a single middle frame gets noise_max
    x = (x - inner.min()) / span if span > 1e-12 else np.ones_like(x)
    levels = noise_min + (noise_max - noise_min) * shape_fn(x, shape)
    levels[0] = levels[-1] = 0.0
    return levels


def depth_noise_levels(num_depths: int, noise_min: float = 0.3, noise_max: float = 0.55,
                       shape: str = "linear") -> np.ndarray:
    """Per-depth level for DID: noise_max at depth 0, noise_min at the deepest level."""
    _check_range(noise_min, noise_max)
    if num_depths <= 1:
        return np.full((max(num_depths, 0),), noise_max)
    x = 1.0 - np.arange(num_depths) / (num_depths - 1)
    return noise_min + (noise_max - noise_min) * shape_fn(x, shape)


# ----------------------------------------------------------------------------- DID schedule


@dataclasses.dataclass(frozen=True)
class Node:
    """One frame of the DID tree: made from frames ``left`` and ``right`` at ``depth``."""

    frame: int
    left: int
    right: int
    depth: int

    @property
    def t(self) -> float:
        """Position inside the parent interval (the slerp weight)."""
        return (self.frame - self.left) / (self.right - self.left)


def did_schedule(num_frames: int, branching: int | Sequence[int] = 2) -> list[Node]:
    """The DID tree, in generation order (parents before children, depth by depth).

    Interval [l, r] at depth d gets ``branching[d] − 1`` children at round(l + (r−l) j/b),
    j = 1 … b − 1 (all inner frames if fewer); each gap becomes an interval at d + 1.
    ``branching`` is one factor for all depths or one per depth (the last repeats). Any
    ``num_frames >= 2`` works; with b = 2 and 2^k + 1 frames it is the paper's bisection.
    """
    if num_frames < 2:
        raise ConfigError(f"num_frames must be >= 2, got {num_frames}")
    facs = [branching] if isinstance(branching, (int, np.integer)) else list(branching)
    if not facs or any(int(b) < 2 for b in facs):
        raise ConfigError(f"branching factors must be >= 2, got {branching}")
    nodes: list[Node] = []
    level = [(0, num_frames - 1)]
    depth = 0
    while level:
        b = int(facs[min(depth, len(facs) - 1)])
        nxt = []
        for l, r in level:
            if r - l < 2:
                continue
            kids = sorted({int(round(l + (r - l) * j / b)) for j in range(1, b)} - {l, r})
            nodes.extend(Node(k, l, r, depth) for k in kids)
            bounds = [l] + kids + [r]
            nxt.extend(zip(bounds[:-1], bounds[1:]))
        level = [iv for iv in nxt if iv[1] - iv[0] >= 2]
        depth += 1
    return nodes


def num_depths(nodes: Sequence[Node]) -> int:
    return 1 + max((n.depth for n in nodes), default=-1)


# ----------------------------------------------------------------------------- denoisers


class Denoiser(Protocol):
    params: Any

    def eps(self, params: Any, z: Array, logsnr: Array, cond: Mapping[str, Array]) -> Array:
        ...


@dataclasses.dataclass(eq=False)  # hashed by identity: a static jit argument
class TextDenoiser:
    """A ``LatentDiffusion`` with classifier-free guidance between ``cond["pos"]`` and
    ``cond["neg"]`` (text contexts [B, L, D]) and, with a ControlNet, ``cond["control"]``
    ([B, H, W, 3] in [−1, 1]) at per-example strength ``cond["control_scale"]`` [B],
    applied to both branches (as diffusers does)."""

    model: Any
    guidance_scale: float = 7.5
    controlnet: Any = None
    controlnet_params: Any = None

    @property
    def params(self) -> Any:
        return {"unet": self.model.unet_params, "controlnet": self.controlnet_params}

    def eps(self, params, z, logsnr, cond):
        b = z.shape[0]
        use_cfg = self.guidance_scale != 1.0
        ctx = jnp.concatenate([cond["neg"], cond["pos"]]) if use_cfg else cond["pos"]
        zz = jnp.concatenate([z, z]) if use_cfg else z
        ll = jnp.broadcast_to(logsnr, (b,))
        ll = jnp.concatenate([ll, ll]) if use_cfg else ll
        kw = {}
        if self.controlnet is not None and "control" in cond:
            ctrl, scale = cond["control"], cond["control_scale"]
            if use_cfg:
                ctrl, scale = jnp.concatenate([ctrl, ctrl]), jnp.concatenate([scale, scale])
            ts = self.model.schedule.timestep(ll)
            down, mid = self.controlnet.apply({"params": params["controlnet"]}, zz, ts, ctx,
                                              ctrl, conditioning_scale=1.0)
            sc = lambda r: r * scale.reshape((-1,) + (1,) * (r.ndim - 1)).astype(r.dtype)  # noqa
            kw = dict(down_block_additional_residuals=tuple(sc(d) for d in down),
                      mid_block_additional_residual=sc(mid))
        out = self.model.eps_fn(ctx, params=params["unet"], **kw)(zz, ll)
        if not use_cfg:
            return out
        e_neg, e_pos = out[:b], out[b:]
        return e_neg + self.guidance_scale * (e_pos - e_neg)


# ----------------------------------------------------------------------------- DDIM


def ddim_grid(num_steps: int, logsnr_fn: Callable[[Array], Array]) -> Array:
    """λ(t_k), t_k = k / num_steps, k = 0 … num_steps (entry 0 unused: clean data)."""
    t = jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps
    return jnp.asarray(logsnr_fn(jnp.maximum(t, 1.0 / num_steps)), jnp.float32)


def start_index(level: float, num_steps: int) -> int:
    """Grid index of a level (fraction of the schedule); 0 means no denoising."""
    return int(np.clip(round(float(level) * num_steps), 0, num_steps))


@functools.partial(jax.jit, static_argnames=("eps_fn",))
def _ddim_from(eps_fn, params, z, cond, grid, k0):
    """Deterministic DDIM z_{t_k0} → x̂0 on ``grid`` (k0 ≥ 1, traced)."""

    def x0_of(z, lam):
        eps = eps_fn(params, z, lam, cond)
        return targets.x0_from_eps(z=z, eps=eps.astype(z.dtype), logsnr=lam)

    return samplers.ddim_from(denoise_fn=x0_of, z=z, logsnr_at=lambda k: grid[k],
                              num_steps=k0, eta=0.0)


def ddim_denoise(denoiser: Denoiser, z: Array, cond: Mapping[str, Array], *, k0: int,
                 grid: Array) -> Array:
    """x̂0 from z at grid index k0 by k0 − 1 DDIM steps and a final x̂0 (k0 model calls)."""
    if k0 <= 0:
        return z
    return _ddim_from(denoiser.eps, denoiser.params, z, dict(cond), grid,
                      jnp.asarray(k0, jnp.int32))


def ddim_reference(x0_fn: Callable[[np.ndarray, float], np.ndarray], z: np.ndarray,
                   logsnrs: Sequence[float]) -> np.ndarray:
    """Plain numpy DDIM through ``logsnrs`` (decreasing noise) then x̂0 — for tests."""
    z = np.asarray(z, np.float64)
    for lt, ls in zip(logsnrs[:-1], logsnrs[1:]):
        at, st = np.sqrt(1 / (1 + np.exp(-lt))), np.sqrt(1 / (1 + np.exp(lt)))
        as_, ss = np.sqrt(1 / (1 + np.exp(-ls))), np.sqrt(1 / (1 + np.exp(ls)))
        x0 = x0_fn(z, lt)
        eps = (z - at * x0) / st
        z = as_ * x0 + ss * eps
    return x0_fn(z, logsnrs[-1])


# ----------------------------------------------------------------------------- schemes


@dataclasses.dataclass
class Interpolator:
    """Runs the schemes for one denoiser; ``logsnr_fn`` maps schedule fractions to λ."""

    denoiser: Denoiser
    logsnr_fn: Callable[[Array], Array]
    ddim_steps: int = 200
    noise_min: float = 0.3
    noise_max: float = 0.55
    shape: str = "linear"
    branching: int | Sequence[int] = 2
    candidates: int = 1

    def __post_init__(self):
        if self.ddim_steps < 1:
            raise ConfigError(f"ddim_steps must be >= 1, got {self.ddim_steps}")
        if self.candidates < 1:
            raise ConfigError(f"candidates must be >= 1, got {self.candidates}")
        shape_fn(0.0, self.shape)
        _check_range(self.noise_min, self.noise_max)
        self.grid = ddim_grid(self.ddim_steps, self.logsnr_fn)

    # one frame from one parent pair
    def _frame(self, key: Array, xl: Array, xr: Array, t: float, level: float,
               cond: Mapping[str, Array]) -> tuple[Array, Array]:
        """C candidates [C, ...] of slerp(noised xl, noised xr, t), denoised from ``level``;
        candidate c's noise is normal(fold_in(key, c)), shared by both parents."""
        k0 = start_index(level, self.ddim_steps)
        c = self.candidates
        if k0 == 0:
            return jnp.broadcast_to(slerp(xl, xr, t), (c,) + xl.shape), jnp.zeros((c,))
        eps = jnp.stack([jax.random.normal(jax.random.fold_in(key, i), xl.shape, jnp.float32)
                         for i in range(c)])
        lam = self.grid[k0]
        zl = targets.q_sample(x0=xl[None], eps=eps, logsnr=jnp.broadcast_to(lam, (c,)))
        zr = targets.q_sample(x0=xr[None], eps=eps, logsnr=jnp.broadcast_to(lam, (c,)))
        z = jax.vmap(lambda a, b: slerp(a, b, t))(zl, zr)
        batch_cond = {k: jnp.broadcast_to(v, (c,) + jnp.shape(v)) for k, v in cond.items()}
        return ddim_denoise(self.denoiser, z, batch_cond, k0=k0, grid=self.grid), eps

    def _pick(self, select_fn: SelectFn | None, frame: int, cands: Array) -> int:
        if select_fn is None or cands.shape[0] == 1:
            return 0
        i = int(select_fn(frame, cands))
        if not 0 <= i < cands.shape[0]:
            raise ConfigError(f"choice {i} for frame {frame} is not in 0..{cands.shape[0] - 1}")
        return i

    def interpolate_only(self, xa: Array, xb: Array, num_frames: int) -> Array:
        return slerp(xa, xb, jnp.linspace(0.0, 1.0, num_frames))

    def interpolate_denoise(self, key: Array, xa: Array, xb: Array, num_frames: int,
                            cond_fn: CondFn, select_fn: SelectFn | None = None,
                            on_candidates: Callable | None = None) -> Array:
        levels = frame_noise_levels(num_frames, self.noise_min, self.noise_max, self.shape)
        pair_key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
            key, _TAG_INTERP_DENOISE), 0), 0)
        out = [None] * num_frames
        out[0], out[-1] = jnp.asarray(xa), jnp.asarray(xb)
        for i in range(1, num_frames - 1):
            pos = i / (num_frames - 1)
            cands, _ = self._frame(pair_key, xa, xb, pos, levels[i], cond_fn(i, pos))
            if on_candidates is not None:
                on_candidates(i, cands)
            out[i] = cands[self._pick(select_fn, i, cands)]
        return jnp.stack(out)

    def did(self, key: Array, xa: Array, xb: Array, num_frames: int, cond_fn: CondFn,
            select_fn: SelectFn | None = None, on_candidates: Callable | None = None) -> Array:
        nodes = did_schedule(num_frames, self.branching)
        levels = depth_noise_levels(num_depths(nodes), self.noise_min, self.noise_max,
                                    self.shape)
        frames: dict[int, Array] = {0: jnp.asarray(xa), num_frames - 1: jnp.asarray(xb)}
        base = jax.random.fold_in(key, _TAG_DID)
        for node in nodes:
            pair_key = jax.random.fold_in(jax.random.fold_in(base, node.depth), node.left)
            pos = node.frame / (num_frames - 1)
            cands, _ = self._frame(pair_key, frames[node.left], frames[node.right], node.t,
                                   levels[node.depth], cond_fn(node.frame, pos))
            if on_candidates is not None:
                on_candidates(node.frame, cands)
            frames[node.frame] = cands[self._pick(select_fn, node.frame, cands)]
        return jnp.stack([frames[i] for i in range(num_frames)])

    def run(self, scheme: str, key: Array, xa: Array, xb: Array, num_frames: int,
            cond_fn: CondFn, select_fn: SelectFn | None = None,
            on_candidates: Callable | None = None) -> Array:
        """Latents [num_frames, ...] of ``scheme`` (one of SCHEMES)."""
        if num_frames < 2:
            raise ConfigError(f"num_frames must be >= 2, got {num_frames}")
        if scheme == "interp":
            return self.interpolate_only(xa, xb, num_frames)
        if scheme == "interp_denoise":
            return self.interpolate_denoise(key, xa, xb, num_frames, cond_fn, select_fn,
                                            on_candidates)
        if scheme == "did":
            return self.did(key, xa, xb, num_frames, cond_fn, select_fn, on_candidates)
        raise ConfigError(f"scheme {scheme!r} is not one of {SCHEMES}")


def text_cond_fn(pos_a: Array, pos_b: Array, neg: Array,
                 extra: Callable[[int, float], Mapping[str, Array]] | None = None) -> CondFn:
    """Per-frame conditioning: slerped positive text embeddings, the shared negative, and
    whatever ``extra(frame, position)`` adds (pose control)."""

    def fn(frame: int, pos: float) -> dict[str, Array]:
        d = {"pos": slerp(pos_a, pos_b, pos), "neg": jnp.asarray(neg, jnp.float32)}
        if extra is not None:
            d.update(extra(frame, pos))
        return d

    return fn
