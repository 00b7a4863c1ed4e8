r"""The loop every sampler shares, and the types of the closures it drives.

Time grid
---------
Time runs on a uniform grid t_k = k / N from t = 1 (noise) to t = 0, and λ(t) comes from a
log-SNR schedule (see `schedules.py`).  :func:`run_sampler`

1. draws z_1 ~ N(0, I) (ignoring α(1) ≈ e^{λ_min/2}),
2. makes N − 1 updates z_{t_k} → z_{t_{k−1}}, k = N, …, 2 (a `lax.fori_loop`),
3. returns x̂0 = denoise_fn(z_{t_1}, λ(t_1)) — the update to clean data (σ = 0) of every
   sampler collapses to this, as in k-diffusion's final step to σ = 0.

The loop body is traced once, so one `jax.jit` serves any step count, any schedule and, since
`num_steps`, `gamma`, `eta` and `delta` may be traced scalars, any of those values.  Nothing
loops over the batch on the host and every operation is per-example, so a batch sharded
over a mesh on axis 0 stays sharded (random draws use `jax.random` under the default
partitionable threefry, hence do not depend on the sharding).

Random streams: `init_rng, loop_rng, aux_rng = split(rng, 3)`; z_1 from `init_rng`, the
predictor noise of update k (k = 0 … N − 2) from `fold_in(loop_rng, k)`, and every other
draw (corrector noise, hook keys) from keys split off `fold_in(aux_rng, k)`.

Post-step hook
--------------
Each sampler accepts `post_step_fn(z_s, logsnr_s, rng) -> z_s` (logsnr_s has shape [B]).  It is
applied to every new latent the sampler produces at a level λ_s < ∞ — after each predictor
update and, for `pc_sample`, after each corrector update — but not to z_1 and not to the
returned x̂0.  `guidance.replacement_post_step` is the intended user (the replacement method);
a hook must keep z_s's shape and dtype and act per example.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp

Array = jax.Array
DenoiseFn = Callable[[Array, Array], Array]
Schedule = Callable[[Array], Array]
PostStepFn = Callable[[Array, Array, Array], Array]
Scalar = float | Array
# step(k, z_t, logsnr_t, logsnr_s, noise_rng, aux_rng, state) -> (z_s, state)
StepFn = Callable[[Array, Array, Array, Array, Array, Array, Any], tuple[Array, Any]]


def check_num_steps(num_steps: int | Array) -> None:
    """Validate a concrete step count; a traced one is taken as given."""
    if isinstance(num_steps, numbers.Integral) and num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")


def denoise_x0(denoise_fn: DenoiseFn, z: Array, logsnr: Array, *, clip_x0: bool) -> Array:
    """x̂0 = denoise_fn(z, λ·1_B), optionally clipped to [−1, 1]."""
    x0_hat = denoise_fn(z, jnp.full((z.shape[0],), logsnr, jnp.float32))
    return jnp.clip(x0_hat, -1.0, 1.0) if clip_x0 else x0_hat


def apply_post_step(post_step_fn: PostStepFn | None, z: Array, logsnr: Array,
                    rng: Array) -> Array:
    """z ← post_step_fn(z, λ·1_B, rng), or z unchanged without a hook."""
    if post_step_fn is None:
        return z
    out = post_step_fn(z, jnp.full((z.shape[0],), logsnr, jnp.float32), rng)
    return out.astype(z.dtype)


def run_sampler(
    *,
    name: str,
    step_fn: StepFn,
    state: Any,
    denoise_fn: DenoiseFn,
    rng: Array,
    shape: tuple[int, ...],
    logsnr_schedule: Schedule,
    num_steps: int | Array,
    clip_x0: bool,
    dtype: jnp.dtype,
) -> Array:
    """z_1 ~ N(0, I); N − 1 calls of `step_fn` on the uniform t grid; return x̂0(z_{t_1}).

    `step_fn(k, z_t, λ_t, λ_s, noise_rng, aux_rng, state)` maps z_{t_k'} to z_{t_{k'−1}} for
    k' = N − k (loop index k = 0 … N − 2) and carries sampler state (e.g. the previous x̂0).
    """
    check_num_steps(num_steps)
    n = jnp.asarray(num_steps, jnp.float32)
    init_rng, loop_rng, aux_rng = jax.random.split(rng, 3)

    def body(k: Array, carry: tuple[Array, Any]) -> tuple[Array, Any]:
        with jax.named_scope(f"{name}_step"):
            z, state = carry
            logsnr_t = logsnr_schedule((n - k) / n)
            logsnr_s = logsnr_schedule((n - k - 1) / n)
            noise_rng = jax.random.fold_in(loop_rng, k)
            step_aux_rng = jax.random.fold_in(aux_rng, k)
            return step_fn(k, z, logsnr_t, logsnr_s, noise_rng, step_aux_rng, state)

    with jax.named_scope(f"{name}_sample"):
        z = jax.random.normal(init_rng, shape, dtype)
        z, _ = jax.lax.fori_loop(0, num_steps - 1, body, (z, state))
        logsnr_last = logsnr_schedule(1.0 / n)
        return denoise_x0(denoise_fn, z, logsnr_last, clip_x0=clip_x0).astype(dtype)
