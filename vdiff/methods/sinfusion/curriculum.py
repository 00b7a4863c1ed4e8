"""The Predictor's frame-difference curriculum, pure jax (`step` is the train state's step).

k = 1 only at first, widening stage by stage to k ∈ [−max_k, max_k] \\ {0}; negative k
predicts a past frame.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def curriculum_k_range(step: jax.Array | int | None, *, max_k: int, stage_steps: int,
                       backward: bool = True,
                       num_frames: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Allowed k ∈ [lo, hi] \\ {0} at `step`.

    s = ⌊step / stage_steps⌋,  hi = min(max_k, 1 + s),  lo = −min(max_k, s) (backward) else 1,
    so stage 0 is k = 1 only, stage 1 is {−1, 1, 2}, …, stage ≥ max_k is [−max_k, max_k].
    `step` None or stage_steps = 0 mean the end of the curriculum. With `num_frames` T the
    range is also clipped to |k| ≤ T − 1.
    """
    if max_k < 1:
        raise ValueError(f"max_k must be ≥ 1, got {max_k}")
    if step is None or stage_steps <= 0:
        s = jnp.asarray(max_k, jnp.int32)
    else:
        s = jnp.asarray(step, jnp.int32) // stage_steps
    hi = jnp.minimum(max_k, 1 + s)
    lo = -jnp.minimum(max_k, s) if backward else jnp.ones_like(hi)
    if num_frames is not None:
        hi = jnp.minimum(hi, num_frames - 1)
        lo = jnp.where(lo < 0, jnp.maximum(lo, -(num_frames - 1)), lo)
    return lo.astype(jnp.int32), hi.astype(jnp.int32)


def curriculum_max_k(step: jax.Array | int | None, *, max_k: int, stage_steps: int) -> jax.Array:
    """Largest forward k at `step`: min(max_k, 1 + ⌊step / stage_steps⌋) (max_k for None)."""
    return curriculum_k_range(step, max_k=max_k, stage_steps=stage_steps)[1]


def sample_frame_pair(rng: jax.Array, step: jax.Array | int | None, num_frames: int, *,
                      max_k: int, stage_steps: int, backward: bool = True,
                      context: int = 1) -> tuple[jax.Array, jax.Array]:
    """(n, k), int32 scalars: k uniform on the curriculum's [lo, hi] \\ {0}, then n uniform on
    the frames with n + k and the context frames n, n − k, …, n − (c−1)·k in [0, T): for
    c = 1, n ∈ [max(0, −k), T − 1 − max(0, k)]."""
    if num_frames < 1 + context:
        raise ValueError(f"the Predictor with {context} context frame(s) needs ≥ "
                         f"{1 + context} frames, got {num_frames}")
    # c·|k| ≤ T − 1 keeps at least one valid n
    lo, hi = curriculum_k_range(step, max_k=max_k, stage_steps=stage_steps, backward=backward,
                                num_frames=(num_frames - 1) // context + 1)
    spans_zero = lo <= 0
    count = hi - lo + 1 - spans_zero.astype(jnp.int32)
    rng_k, rng_n = jax.random.split(rng)
    k = lo + jax.random.randint(rng_k, (), 0, count, jnp.int32)
    k = jnp.where(spans_zero & (k >= 0), k + 1, k)
    first = jnp.where(k > 0, (context - 1) * k, -k)
    span = num_frames - context * jnp.abs(k)
    n = first + jax.random.randint(rng_n, (), 0, span, jnp.int32)
    return n, k
