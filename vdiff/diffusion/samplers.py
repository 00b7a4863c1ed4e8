r"""Samplers driven by a `denoise_fn(z, logsnr) -> x̂0` closure.

The sampler never knows which network is behind `denoise_fn`; `logsnr` is passed with the
batch shape [B].  ε-, x0- and v-parameterised networks all fit: wrap the network output with
`targets.predictions` (or `guidance.guided_denoiser`) so the closure returns x̂0.

Time grid and the shared skeleton
---------------------------------
Time runs on a uniform grid t_k = k / N from t = 1 (noise) to t = 0, and λ(t) comes from a
log-SNR schedule (see `schedules.py`).  Every sampler here

1. draws z_1 ~ N(0, I) (ignoring α(1) ≈ e^{λ_min/2}),
2. makes N − 1 updates z_{t_k} → z_{t_{k−1}}, k = N, …, 2 (a `lax.fori_loop`),
3. returns x̂0 = denoise_fn(z_{t_1}, λ(t_1)) — the update to clean data (σ = 0) of every
   sampler below collapses to this, as in k-diffusion's final step to σ = 0.

The loop body is traced once, so one `jax.jit` serves any step count, any schedule and, since
`num_steps`, `gamma`, `eta` and `delta` may be traced scalars, any of those values.  Nothing
loops over the batch on the host and every operation is per-example, so a batch sharded
over a mesh on axis 0 stays sharded (random draws use `jax.random` under the default
partitionable threefry, hence do not depend on the sharding).

Random streams: `init_rng, loop_rng, aux_rng = split(rng, 3)`; z_1 from `init_rng`, the
predictor noise of update k (k = 0 … N − 2) from `fold_in(loop_rng, k)`, and every other
draw (corrector noise, hook keys) from keys split off `fold_in(aux_rng, k)`.

Truncated sampling
------------------
`ddim_from` starts from a latent already at some level λ_M of any grid (`logsnr_at(j)`) and
runs the same DDIM updates down to x̂0; `truncated_sample` noises clean data to t₀ first
(SDEdit / img2img, SinFusion's editing and Projector correction). The interpolation schemes
and SinFusion both use them.

Post-step hook
--------------
Each sampler accepts `post_step_fn(z_s, logsnr_s, rng) -> z_s` (logsnr_s has shape [B]).  It is
applied to every new latent the sampler produces at a level λ_s < ∞ — after each predictor
update and, for `pc_sample`, after each corrector update — but not to z_1 and not to the
returned x̂0.  `guidance.replacement_post_step` is the intended user (the replacement method);
a hook must keep z_s's shape and dtype and act per example.

Ancestral step t → s < t (λ_s > λ_t), with r = e^{λ_t − λ_s} = (α_t² σ_s²)/(α_s² σ_t²) ∈ (0, 1)
---------------------------------------------------------------------------------------------
The forward posterior q(z_s | z_t, x) = N(μ, σ²_lo) has

    μ     = r (α_s / α_t) z_t + (1 − r) α_s x
    σ²_lo = (1 − r) σ_s²          (true posterior variance; lower bound on reverse entropy)
    σ²_hi = (1 − r) σ_t² = σ²_{t|s}  (forward transition variance; upper bound)

and the reverse step uses x = x̂0 with variance exp(γ log σ²_hi + (1 − γ) log σ²_lo)
(Nichol & Dhariwal 2021; VDM / Ho et al. 2022 treat γ as a sampling hyperparameter).

Function evaluations (NFE, calls of `denoise_fn` per sample)
------------------------------------------------------------
ancestral N, ddim N, dpmpp_2m N, pc N + M (N − 1) with M corrector steps
(:func:`num_function_evals`).  A guided closure costs more per call: classifier-free guidance
with K conditions evaluates the network K + 1 times, reconstruction guidance adds one
backward pass.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp

from vdiff.diffusion.schedules import alpha_sigma
from vdiff.diffusion.targets import bcast_right, q_sample

Array = jax.Array
DenoiseFn = Callable[[Array, Array], Array]
Schedule = Callable[[Array], Array]
PostStepFn = Callable[[Array, Array, Array], Array]
Scalar = float | Array
# step(k, z_t, logsnr_t, logsnr_s, noise_rng, aux_rng, state) -> (z_s, state)
StepFn = Callable[[Array, Array, Array, Array, Array, Array, Any], tuple[Array, Any]]

DEFAULT_GAMMA = 0.3
DEFAULT_LANGEVIN_DELTA = 0.1


# --------------------------------------------------------------------------------------------
# single steps


def ancestral_posterior(
    *, z_t: Array, x0_hat: Array, logsnr_t: Array, logsnr_s: Array, gamma: Scalar = DEFAULT_GAMMA
) -> tuple[Array, Array]:
    """Mean and log-variance of the ancestral step z_t → z_s (λ_s > λ_t); see module docstring.

    Computed in log space: 1 − r = −expm1(λ_t − λ_s), log σ² = log_sigmoid(−λ),
    α_s/α_t = exp(½(log_sigmoid(λ_s) − log_sigmoid(λ_t))).  Returns (μ, log σ²) broadcast
    to z_t's shape.
    """
    ndim = jnp.ndim(z_t)
    lt = bcast_right(jnp.asarray(logsnr_t, jnp.float32), ndim=ndim)
    ls = bcast_right(jnp.asarray(logsnr_s, jnp.float32), ndim=ndim)
    delta = lt - ls
    r = jnp.exp(delta)
    one_minus_r = -jnp.expm1(delta)
    log_sig2_t = jax.nn.log_sigmoid(-lt)
    log_sig2_s = jax.nn.log_sigmoid(-ls)
    alpha_s = jnp.exp(0.5 * jax.nn.log_sigmoid(ls))
    alpha_ratio = jnp.exp(0.5 * (jax.nn.log_sigmoid(ls) - jax.nn.log_sigmoid(lt)))
    mean = r * alpha_ratio * z_t + one_minus_r * alpha_s * x0_hat
    log_var = jnp.log(one_minus_r) + gamma * log_sig2_t + (1.0 - gamma) * log_sig2_s
    return mean, jnp.broadcast_to(log_var, jnp.shape(mean))


def ancestral_step(
    *,
    rng: Array,
    z_t: Array,
    x0_hat: Array,
    logsnr_t: Array,
    logsnr_s: Array,
    gamma: Scalar = DEFAULT_GAMMA,
) -> Array:
    """One ancestral step: z_s = μ + exp(½ log σ²) ε, ε ~ N(0, I), in z_t's dtype."""
    mean, log_var = ancestral_posterior(
        z_t=z_t, x0_hat=x0_hat, logsnr_t=logsnr_t, logsnr_s=logsnr_s, gamma=gamma
    )
    noise = jax.random.normal(rng, jnp.shape(z_t), jnp.float32)
    return (mean + jnp.exp(0.5 * log_var) * noise).astype(z_t.dtype)


def ddim_step(
    *,
    rng: Array,
    z_t: Array,
    x0_hat: Array,
    logsnr_t: Array,
    logsnr_s: Array,
    eta: Scalar = 0.0,
) -> Array:
    """One DDIM step z_t → z_s (Song et al. 2021), λ_s > λ_t.

    z_s = α_s x̂0 + sqrt(σ_s² − c²) ε̂ + c ξ,  ε̂ = (z_t − α_t x̂0)/σ_t,  c² = η² (1 − r) σ_s²,

    with r = e^{λ_t − λ_s}: c² is η² times the posterior variance σ²_lo, so η = 0 is the
    deterministic DDIM / probability-flow step and η = 1 is exactly the ancestral step with
    γ = 0.  Written without dividing by σ_t: with e^{−h} = √r (h = (λ_s − λ_t)/2) and
    ρ = sqrt(1 − η²(1 − r)),

        z_s = ρ (σ_s/σ_t) z_t + α_s (1 − ρ√r) x̂0 + c ξ,
        1 − ρ√r = (1 − r)(1 + η² r) / (1 + ρ√r)      (no cancellation as h → 0).
    """
    ndim = jnp.ndim(z_t)
    lt = bcast_right(jnp.asarray(logsnr_t, jnp.float32), ndim=ndim)
    ls = bcast_right(jnp.asarray(logsnr_s, jnp.float32), ndim=ndim)
    eta2 = jnp.square(jnp.asarray(eta, jnp.float32))
    r = jnp.exp(lt - ls)
    one_minus_r = -jnp.expm1(lt - ls)
    rho = jnp.sqrt(1.0 - eta2 * one_minus_r)
    sigma_ratio = jnp.exp(0.5 * (jax.nn.log_sigmoid(-ls) - jax.nn.log_sigmoid(-lt)))
    alpha_s = jnp.exp(0.5 * jax.nn.log_sigmoid(ls))
    coef_x = alpha_s * one_minus_r * (1.0 + eta2 * r) / (1.0 + rho * jnp.sqrt(r))
    std = jnp.sqrt(eta2 * one_minus_r) * jnp.exp(0.5 * jax.nn.log_sigmoid(-ls))
    noise = jax.random.normal(rng, jnp.shape(z_t), jnp.float32)
    z_s = rho * sigma_ratio * z_t + coef_x * x0_hat + std * noise
    return z_s.astype(z_t.dtype)


def langevin_corrector_step(
    *, rng: Array, z: Array, x0_hat: Array, logsnr: Array, delta: Scalar = DEFAULT_LANGEVIN_DELTA
) -> Array:
    """One Langevin correction at a fixed level λ (as in VDM, Ho et al. 2022).

    z ← z − ½ δ σ ε̂ + √δ σ ξ,  ε̂ = (z − α x̂0)/σ,  ξ ~ N(0, I).

    Since ∇_z log p_λ(z) ≈ −ε̂/σ this is the unadjusted Langevin step
    z ← z + ½ τ ∇ log p_λ(z) + √τ ξ with step τ = δ σ², i.e. the step is δ times the noise
    variance of the level (Song et al. 2021's "corrector" with a fixed relative step).
    Computed as z − ½ δ (z − α x̂0) + √δ σ ξ (no division by σ).
    """
    lam = bcast_right(jnp.asarray(logsnr, jnp.float32), ndim=jnp.ndim(z))
    alpha, sigma = alpha_sigma(logsnr=lam)
    delta = jnp.asarray(delta, jnp.float32)
    noise = jax.random.normal(rng, jnp.shape(z), jnp.float32)
    z_new = z - 0.5 * delta * (z - alpha * x0_hat) + jnp.sqrt(delta) * sigma * noise
    return z_new.astype(z.dtype)


def dpm_solver_pp_2m_step(
    *,
    z_t: Array,
    x0_hat: Array,
    x0_hat_prev: Array,
    logsnr_prev: Array,
    logsnr_t: Array,
    logsnr_s: Array,
    first_order: Array | bool = False,
) -> Array:
    """One DPM-Solver++(2M) step z_t → z_s (Lu et al. 2022, data prediction, multistep).

    In the half-log-SNR variable (DPM-Solver's λ is log(α/σ) = λ/2 here):

        h = (λ_s − λ_t)/2,   h_prev = (λ_t − λ_prev)/2,   r = h_prev / h,
        D = (1 + 1/(2r)) x̂0(z_t) − (1/(2r)) x̂0(z_prev),
        z_s = (σ_s/σ_t) z_t + α_s (1 − e^{−h}) D.

    `first_order` (the first step, where no previous x̂0 exists; also forced where h_prev ≤ 0)
    uses D = x̂0(z_t), which is the DDIM η = 0 step.  1 − e^{−h} = −expm1(−h); 1/(2r) = h / (2 h_prev).
    """
    ndim = jnp.ndim(z_t)
    lp = bcast_right(jnp.asarray(logsnr_prev, jnp.float32), ndim=ndim)
    lt = bcast_right(jnp.asarray(logsnr_t, jnp.float32), ndim=ndim)
    ls = bcast_right(jnp.asarray(logsnr_s, jnp.float32), ndim=ndim)
    h = 0.5 * (ls - lt)
    h_prev = 0.5 * (lt - lp)
    first = jnp.logical_or(first_order, h_prev <= 0.0)  # also where a flat schedule repeats λ
    half_inv_r = jnp.where(first, 0.0, h / (2.0 * jnp.where(first, 1.0, h_prev)))
    data = x0_hat + half_inv_r * (x0_hat - x0_hat_prev)
    sigma_ratio = jnp.exp(0.5 * (jax.nn.log_sigmoid(-ls) - jax.nn.log_sigmoid(-lt)))
    alpha_s = jnp.exp(0.5 * jax.nn.log_sigmoid(ls))
    z_s = sigma_ratio * z_t - alpha_s * jnp.expm1(-h) * data
    return z_s.astype(z_t.dtype)


# --------------------------------------------------------------------------------------------
# shared skeleton


def _check_num_steps(num_steps: int | Array) -> None:
    """Validate a concrete step count; a traced one is taken as given."""
    if isinstance(num_steps, numbers.Integral) and num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")


def _denoise(denoise_fn: DenoiseFn, z: Array, logsnr: Array, *, clip_x0: bool) -> Array:
    """x̂0 = denoise_fn(z, λ·1_B), optionally clipped to [−1, 1]."""
    x0_hat = denoise_fn(z, jnp.full((z.shape[0],), logsnr, jnp.float32))
    return jnp.clip(x0_hat, -1.0, 1.0) if clip_x0 else x0_hat


def _apply_hook(post_step_fn: PostStepFn | None, z: Array, logsnr: Array, rng: Array) -> Array:
    """z ← post_step_fn(z, λ·1_B, rng), or z unchanged without a hook."""
    if post_step_fn is None:
        return z
    out = post_step_fn(z, jnp.full((z.shape[0],), logsnr, jnp.float32), rng)
    return out.astype(z.dtype)


def _run_sampler(
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
    _check_num_steps(num_steps)
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
        return _denoise(denoise_fn, z, logsnr_last, clip_x0=clip_x0).astype(dtype)


# --------------------------------------------------------------------------------------------
# samplers


def ancestral_sample(
    *,
    denoise_fn: DenoiseFn,
    rng: Array,
    shape: tuple[int, ...],
    logsnr_schedule: Schedule,
    num_steps: int | Array,
    gamma: Scalar = DEFAULT_GAMMA,
    clip_x0: bool = False,
    dtype: jnp.dtype = jnp.float32,
    post_step_fn: PostStepFn | None = None,
) -> Array:
    """Ancestral sampling from z_1 ~ N(0, I); NFE = N.

    Steps t_k → t_{k−1} (t_k = k/N) for k = N, …, 2 use :func:`ancestral_step` with
    x̂0 = denoise_fn(z_{t_k}, λ(t_k)); the last call at t_1 returns x̂0 itself (no noise).
    `denoise_fn` is traced twice (loop body + final call) regardless of `num_steps`.
    `clip_x0` defaults to False as in every sampler here: clipping x̂0 to [−1, 1] is only
    right for data known to lie there (pixels), so pixel-space callers pass True; latents
    (e.g. Stable Diffusion's, std ≈ 1) must not be clipped.
    """

    def step(k, z, logsnr_t, logsnr_s, noise_rng, aux_rng, state):
        x0_hat = _denoise(denoise_fn, z, logsnr_t, clip_x0=clip_x0)
        z = ancestral_step(
            rng=noise_rng, z_t=z, x0_hat=x0_hat, logsnr_t=logsnr_t, logsnr_s=logsnr_s, gamma=gamma
        )
        return _apply_hook(post_step_fn, z, logsnr_s, aux_rng), state

    return _run_sampler(
        name="ancestral", step_fn=step, state=(), denoise_fn=denoise_fn, rng=rng, shape=shape,
        logsnr_schedule=logsnr_schedule, num_steps=num_steps, clip_x0=clip_x0, dtype=dtype,
    )


def ddim_sample(
    *,
    denoise_fn: DenoiseFn,
    rng: Array,
    shape: tuple[int, ...],
    logsnr_schedule: Schedule,
    num_steps: int | Array,
    eta: Scalar = 0.0,
    clip_x0: bool = False,
    dtype: jnp.dtype = jnp.float32,
    post_step_fn: PostStepFn | None = None,
) -> Array:
    """DDIM sampling (:func:`ddim_step`); NFE = N.

    η = 0: deterministic given z_1 (first-order solver of the probability-flow ODE, i.e.
    DPM-Solver-1).  η = 1: the same chain as :func:`ancestral_sample` with γ = 0, and with the
    same `rng` the same samples up to float round-off.
    """

    def step(k, z, logsnr_t, logsnr_s, noise_rng, aux_rng, state):
        x0_hat = _denoise(denoise_fn, z, logsnr_t, clip_x0=clip_x0)
        z = ddim_step(rng=noise_rng, z_t=z, x0_hat=x0_hat, logsnr_t=logsnr_t, logsnr_s=logsnr_s, eta=eta)
        return _apply_hook(post_step_fn, z, logsnr_s, aux_rng), state

    return _run_sampler(
        name="ddim", step_fn=step, state=(), denoise_fn=denoise_fn, rng=rng, shape=shape,
        logsnr_schedule=logsnr_schedule, num_steps=num_steps, clip_x0=clip_x0, dtype=dtype,
    )


def ddim_from(
    *,
    denoise_fn: DenoiseFn,
    z: Array,
    logsnr_at: Callable[[Array], Array],
    num_steps: int | Array,
    rng: Array | None = None,
    eta: Scalar = 0.0,
    clip_x0: bool = False,
) -> Array:
    """Truncated DDIM: from z, already at level λ_M = logsnr_at(M), M = `num_steps` ≥ 1
    (may be traced), to x̂0 in M network calls.

    Steps λ_j → λ_{j−1} (:func:`ddim_step`) for j = M, …, 2, then x̂0 = denoise_fn(z, λ_1);
    `logsnr_at(j)` takes an int32 step index j ∈ [1, M] and returns a scalar λ_j, increasing as
    j falls (a table lookup or a schedule on any grid). The noise of the step from j is
    `fold_in(rng, M − j)`; `rng` may be None for η = 0 (no noise is used).
    """
    _check_num_steps(num_steps)
    rng = jax.random.key(0) if rng is None else rng
    m = jnp.asarray(num_steps, jnp.int32)

    def body(i: Array, z: Array) -> Array:
        with jax.named_scope("ddim_from_step"):
            j = m - i
            logsnr_t, logsnr_s = logsnr_at(j), logsnr_at(j - 1)
            x0_hat = _denoise(denoise_fn, z, logsnr_t, clip_x0=clip_x0)
            return ddim_step(rng=jax.random.fold_in(rng, i), z_t=z, x0_hat=x0_hat,
                             logsnr_t=logsnr_t, logsnr_s=logsnr_s, eta=eta)

    with jax.named_scope("ddim_from"):
        z = jax.lax.fori_loop(0, m - 1, body, z)
        return _denoise(denoise_fn, z, logsnr_at(jnp.int32(1)), clip_x0=clip_x0)


def truncated_sample(
    *,
    denoise_fn: DenoiseFn,
    rng: Array,
    x: Array,
    t_start: Scalar,
    logsnr_schedule: Schedule,
    num_steps: int,
    eta: Scalar = 0.0,
    clip_x0: bool = False,
) -> Array:
    """Noise x to t₀ = `t_start` ∈ [0, 1] (may be traced) and denoise from there (SDEdit /
    img2img; SinFusion's editing and Projector correction):

        z_{t₀} = α(t₀) x + σ(t₀) ε,  then :func:`ddim_from` on t_j = t₀ j / M, j = M … 1,
        M = max(1, ⌈N t₀⌉) (the step size of full N-step sampling);  t₀ = 0 returns x.

    Random streams: `noise_rng, loop_rng = split(rng)`; ε from `noise_rng`, the DDIM steps
    from `loop_rng`.
    """
    t0 = jnp.clip(jnp.asarray(t_start, jnp.float32), 0.0, 1.0)
    m = jnp.maximum(1, jnp.ceil(num_steps * t0)).astype(jnp.int32)
    mf = m.astype(jnp.float32)
    b = x.shape[0]
    noise_rng, loop_rng = jax.random.split(rng)
    with jax.named_scope("truncated_sample"):
        eps = jax.random.normal(noise_rng, x.shape, jnp.float32)
        z = q_sample(x0=x.astype(jnp.float32), eps=eps,
                     logsnr=jnp.full((b,), logsnr_schedule(t0)))
        out = ddim_from(denoise_fn=denoise_fn, z=z,
                        logsnr_at=lambda j: logsnr_schedule(t0 * j / mf), num_steps=m,
                        rng=loop_rng, eta=eta, clip_x0=clip_x0)
    return jnp.where(t0 > 0, out, x).astype(x.dtype)


def pc_sample(
    *,
    denoise_fn: DenoiseFn,
    rng: Array,
    shape: tuple[int, ...],
    logsnr_schedule: Schedule,
    num_steps: int | Array,
    gamma: Scalar = DEFAULT_GAMMA,
    num_corrector_steps: int | Array = 1,
    delta: Scalar = DEFAULT_LANGEVIN_DELTA,
    clip_x0: bool = False,
    dtype: jnp.dtype = jnp.float32,
    post_step_fn: PostStepFn | None = None,
) -> Array:
    """Predictor-corrector sampling; NFE = N + M (N − 1) for M = `num_corrector_steps`.

    Each update t → s is an ancestral step (predictor, :func:`ancestral_step` with `gamma`)
    followed by M Langevin corrections at the new level λ_s (:func:`langevin_corrector_step`),

        z_s ← z_s − ½ δ σ_s ε̂(z_s) + √δ σ_s ξ,   ε̂(z_s) = (z_s − α_s x̂0(z_s, λ_s)) / σ_s,

    each with a fresh denoiser call, δ = 0.1 by default (the Langevin corrector as written in
    Ho et al. 2022, *Video Diffusion Models*, where it is used for conditional sampling;
    Song et al. 2021 for the predictor-corrector scheme).  The corrector loop is a
    `lax.fori_loop`, so `denoise_fn` is traced three times (predictor, corrector, final)
    for any N and M.  `post_step_fn` runs after the predictor and after every correction.
    """

    def step(k, z, logsnr_t, logsnr_s, noise_rng, aux_rng, state):
        hook_rng, corrector_rng = jax.random.split(aux_rng)
        x0_hat = _denoise(denoise_fn, z, logsnr_t, clip_x0=clip_x0)
        z = ancestral_step(
            rng=noise_rng, z_t=z, x0_hat=x0_hat, logsnr_t=logsnr_t, logsnr_s=logsnr_s, gamma=gamma
        )
        z = _apply_hook(post_step_fn, z, logsnr_s, hook_rng)

        def correct(j: Array, z: Array) -> Array:
            corr_noise_rng, corr_hook_rng = jax.random.split(jax.random.fold_in(corrector_rng, j))
            x0_hat = _denoise(denoise_fn, z, logsnr_s, clip_x0=clip_x0)
            z = langevin_corrector_step(rng=corr_noise_rng, z=z, x0_hat=x0_hat, logsnr=logsnr_s, delta=delta)
            return _apply_hook(post_step_fn, z, logsnr_s, corr_hook_rng)

        with jax.named_scope("langevin_corrector"):
            z = jax.lax.fori_loop(0, num_corrector_steps, correct, z)
        return z, state

    return _run_sampler(
        name="pc", step_fn=step, state=(), denoise_fn=denoise_fn, rng=rng, shape=shape,
        logsnr_schedule=logsnr_schedule, num_steps=num_steps, clip_x0=clip_x0, dtype=dtype,
    )


def dpm_solver_pp_2m_sample(
    *,
    denoise_fn: DenoiseFn,
    rng: Array,
    shape: tuple[int, ...],
    logsnr_schedule: Schedule,
    num_steps: int | Array,
    clip_x0: bool = False,
    dtype: jnp.dtype = jnp.float32,
    post_step_fn: PostStepFn | None = None,
) -> Array:
    """DPM-Solver++(2M) (Lu et al. 2022) on the probability-flow ODE; NFE = N.

    Deterministic given z_1.  The first update is first order (no previous x̂0), the next
    N − 2 use :func:`dpm_solver_pp_2m_step` with the x̂0 of the previous grid point, and the
    final update to σ = 0 returns x̂0(z_{t_1}) (first order, as `lower_order_final` in the
    reference code: a second-order step with h → ∞ would extrapolate without bound).
    Meant for few steps (10–25).  The carry holds (x̂0_prev, λ_prev); if `post_step_fn`
    edits z, the next step still extrapolates with the x̂0 from before the edit.
    """

    def step(k, z, logsnr_t, logsnr_s, noise_rng, aux_rng, state):
        x0_prev, logsnr_prev = state
        x0_hat = _denoise(denoise_fn, z, logsnr_t, clip_x0=clip_x0)
        z = dpm_solver_pp_2m_step(
            z_t=z, x0_hat=x0_hat, x0_hat_prev=x0_prev, logsnr_prev=logsnr_prev,
            logsnr_t=logsnr_t, logsnr_s=logsnr_s, first_order=k == 0,
        )
        z = _apply_hook(post_step_fn, z, logsnr_s, aux_rng)
        return z, (x0_hat.astype(x0_prev.dtype), jnp.asarray(logsnr_t, jnp.float32))

    state = (jnp.zeros(shape, dtype), jnp.zeros((), jnp.float32))
    return _run_sampler(
        name="dpmpp_2m", step_fn=step, state=state, denoise_fn=denoise_fn, rng=rng, shape=shape,
        logsnr_schedule=logsnr_schedule, num_steps=num_steps, clip_x0=clip_x0, dtype=dtype,
    )


# --------------------------------------------------------------------------------------------
# registry


def _sampler_registry() -> dict[str, Callable[..., Array]]:
    return {
        "ancestral": ancestral_sample,
        "ddim": ddim_sample,
        "pc": pc_sample,
        "dpmpp_2m": dpm_solver_pp_2m_sample,
    }


def sampler_names() -> tuple[str, ...]:
    """Names accepted by :func:`sample`."""
    return tuple(sorted(_sampler_registry()))


def get_sampler(name: str) -> Callable[..., Array]:
    """The sampler function registered as `name`; ValueError listing the names otherwise."""
    registry = _sampler_registry()
    if name not in registry:
        raise ValueError(f"Unknown sampler {name!r}; known: {sorted(registry)}")
    return registry[name]


def sample(
    *,
    sampler: str,
    denoise_fn: DenoiseFn,
    rng: Array,
    shape: tuple[int, ...],
    logsnr_schedule: Schedule,
    num_steps: int | Array,
    **kwargs: Any,
) -> Array:
    """Dispatch to a sampler by name ('ancestral', 'ddim', 'pc', 'dpmpp_2m').

    `kwargs` are the sampler's own options (gamma, eta, num_corrector_steps, delta, clip_x0,
    dtype, post_step_fn); an option the sampler does not take raises TypeError.
    """
    fn = get_sampler(sampler)
    return fn(
        denoise_fn=denoise_fn, rng=rng, shape=shape, logsnr_schedule=logsnr_schedule,
        num_steps=num_steps, **kwargs,
    )


def num_function_evals(sampler: str, num_steps: int, **kwargs: Any) -> int:
    """Calls of `denoise_fn` per sample: N for 'ancestral', 'ddim', 'dpmpp_2m';
    N + M (N − 1) for 'pc' with M = `num_corrector_steps` (default 1).  Other kwargs are ignored."""
    get_sampler(sampler)
    if sampler == "pc":
        corrector = kwargs.get("num_corrector_steps", 1)
        return num_steps + corrector * (num_steps - 1)
    return num_steps

