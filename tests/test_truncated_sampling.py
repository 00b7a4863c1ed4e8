"""Truncated DDIM lives once (`samplers.ddim_from`, `samplers.truncated_sample`): it equals the
two loops it replaced (SinFusion's truncated diffusion, the interpolation schemes' DDIM from a
grid index), copied here verbatim as references, on toy denoisers."""

from __future__ import annotations

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdiff.diffusion import samplers, schedules, targets
from vdiff.diffusion.targets import q_sample

SCHEDULE = functools.partial(schedules.logsnr_cosine, logsnr_min=-20.0, logsnr_max=20.0)


def toy_x0(z, logsnr):
    """Nonlinear in z and λ, with values past ±1 so clipping matters."""
    return 1.5 * jnp.tanh(0.7 * z + 0.05 * logsnr[:, None, None, None])


def toy_eps(params, z, lam, cond):
    return params * z + 0.1 * jnp.tanh(lam)[:, None, None, None] * cond["c"]


# --- the replaced loops, verbatim --------------------------------------------------------------


def old_truncated_sample(*, denoise_fn, rng, x, t_start, logsnr_schedule, num_steps, eta,
                         clip_x0=True):
    t0 = jnp.clip(jnp.asarray(t_start, jnp.float32), 0.0, 1.0)
    m = jnp.maximum(1, jnp.ceil(num_steps * t0)).astype(jnp.int32)
    mf = m.astype(jnp.float32)
    b = x.shape[0]
    noise_rng, loop_rng = jax.random.split(rng)

    def denoise(z, logsnr):
        x0 = denoise_fn(z, jnp.full((b,), logsnr, jnp.float32))
        return jnp.clip(x0, -1.0, 1.0) if clip_x0 else x0

    def body(i, z):
        logsnr_t = logsnr_schedule(t0 * (mf - i) / mf)
        logsnr_s = logsnr_schedule(t0 * (mf - i - 1) / mf)
        return samplers.ddim_step(rng=jax.random.fold_in(loop_rng, i), z_t=z,
                                  x0_hat=denoise(z, logsnr_t), logsnr_t=logsnr_t,
                                  logsnr_s=logsnr_s, eta=eta)

    eps = jax.random.normal(noise_rng, x.shape, jnp.float32)
    z = q_sample(x0=x.astype(jnp.float32), eps=eps, logsnr=jnp.full((b,), logsnr_schedule(t0)))
    z = jax.lax.fori_loop(0, m - 1, body, z)
    out = denoise(z, logsnr_schedule(t0 / mf))
    return jnp.where(t0 > 0, out, x).astype(x.dtype)


def old_ddim_from(eps_fn, params, z, cond, grid, k0):
    def x0_of(z, k):
        lam = jnp.broadcast_to(grid[k], z.shape[:1])
        eps = eps_fn(params, z, lam, cond)
        return targets.x0_from_eps(z=z, eps=eps.astype(z.dtype), logsnr=lam)

    def body(i, z):
        k = k0 - i
        x0 = x0_of(z, k)
        lam_t = jnp.broadcast_to(grid[k], z.shape[:1])
        lam_s = jnp.broadcast_to(grid[k - 1], z.shape[:1])
        return samplers.ddim_step(rng=jax.random.key(0), z_t=z, x0_hat=x0, logsnr_t=lam_t,
                                  logsnr_s=lam_s, eta=0.0)

    z = jax.lax.fori_loop(0, k0 - 1, body, z)
    return x0_of(z, jnp.asarray(1, jnp.int32))


# --- equivalence -------------------------------------------------------------------------------


@pytest.mark.parametrize("t_start,eta,clip", [(0.37, 1.0, True), (0.8, 0.0, True),
                                              (0.05, 0.5, False), (0.0, 1.0, True),
                                              (1.0, 1.0, True)])
def test_truncated_sample_equals_sinfusion_loop(t_start, eta, clip):
    x = jax.random.uniform(jax.random.key(1), (3, 5, 6, 2), minval=-1, maxval=1)
    kwargs = dict(denoise_fn=toy_x0, rng=jax.random.key(2), x=x, logsnr_schedule=SCHEDULE,
                  num_steps=20, eta=eta, clip_x0=clip)
    # traced t_start, as the applications pass it (one compile for every level)
    new = jax.jit(lambda t: samplers.truncated_sample(t_start=t, **kwargs))(t_start)
    old = jax.jit(lambda t: old_truncated_sample(t_start=t, **kwargs))(t_start)
    np.testing.assert_allclose(np.asarray(new), np.asarray(old), rtol=1e-6, atol=1e-6)
    if t_start == 0.0:
        np.testing.assert_array_equal(np.asarray(new), np.asarray(x))


@pytest.mark.parametrize("k0", [1, 2, 7, 16])
def test_ddim_from_equals_interpolation_loop(k0):
    from vdiff.interpolation import schemes

    grid = schemes.ddim_grid(16, SCHEDULE)
    z = jax.random.normal(jax.random.key(3), (2, 4, 4, 3))
    cond = {"c": jax.random.normal(jax.random.key(4), z.shape)}
    params = jnp.float32(0.3)
    old = jax.jit(old_ddim_from, static_argnums=0)(toy_eps, params, z, cond, grid,
                                                    jnp.int32(k0))
    denoiser = types.SimpleNamespace(params=params, eps=toy_eps)  # a schemes.Denoiser
    new = schemes.ddim_denoise(denoiser, z, cond, k0=k0, grid=grid)
    np.testing.assert_allclose(np.asarray(new), np.asarray(old), rtol=1e-6, atol=1e-6)


def test_ddim_from_counts_calls_and_steps_through_every_level():
    seen = []

    def record(z, logsnr):
        jax.debug.callback(lambda v: seen.append(float(v[0])), logsnr)
        return jnp.zeros_like(z)

    table = jnp.asarray([9.0, 3.0, 1.0, -1.0, -4.0])  # λ_j for j = 0 … 4
    samplers.ddim_from(denoise_fn=record, z=jnp.ones((1, 2)), logsnr_at=lambda j: table[j],
                       num_steps=4)
    jax.effects_barrier()
    assert seen == [-4.0, -1.0, 1.0, 3.0]  # M = 4 calls, from λ_M up to λ_1
