"""Tests for vdiff.diffusion: schedules, ε/x0/v conversions, losses, ancestral sampler."""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdiff import diffusion as D

F32_EPS = float(np.finfo(np.float32).eps)
LOGSNR_MIN, LOGSNR_MAX = -20.0, 20.0

SCHEDULE_KWARGS = {
    "cosine": {},
    "shifted_cosine": {"image_size": 256},
    "linear_beta": {},
    "scaled_linear_beta": {},
    "cosine_beta": {},
}


def _key(i: int) -> jax.Array:
    return jax.random.PRNGKey(i)


def _normal(seed: int, shape: tuple[int, ...]) -> jnp.ndarray:
    """Test data from numpy (jax.random recompiles per shape, which dominates test time)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _logsnr_with_extremes(n: int, seed: int = 0) -> jnp.ndarray:
    """Random λ in [−20, 20] plus the exact extremes and 0."""
    rand = np.random.default_rng(seed).uniform(LOGSNR_MIN, LOGSNR_MAX, size=n)
    return jnp.asarray(np.concatenate([[LOGSNR_MIN, LOGSNR_MAX, 0.0], rand]), jnp.float32)


# --------------------------------------------------------------------------------------------
# schedules


def test_alpha_sigma_variance_preserving():
    lam = jnp.linspace(-30.0, 30.0, 601)
    alpha, sigma = D.alpha_sigma(logsnr=lam)
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, rtol=0, atol=2e-6)
    np.testing.assert_allclose(2 * jnp.log(alpha) - 2 * jnp.log(sigma), lam, atol=1e-4)
    assert bool(jnp.all(sigma > 0)) and bool(jnp.all(alpha > 0))


@pytest.mark.parametrize("name", sorted(SCHEDULE_KWARGS))
def test_schedule_monotone_and_finite(name):
    schedule = D.get_schedule(name, **SCHEDULE_KWARGS[name])
    t = jnp.linspace(0.0, 1.0, 2001)
    lam = schedule(t)
    assert bool(jnp.all(jnp.isfinite(lam)))
    assert bool(jnp.all(jnp.diff(lam) <= 0.0)), "schedule must be non-increasing in t"
    interior = lam[200:-200]
    assert bool(jnp.all(jnp.diff(interior) < 0.0)), "schedule must be strictly decreasing inside"
    assert bool(jnp.all(lam <= LOGSNR_MAX)) and bool(jnp.all(lam >= LOGSNR_MIN))
    grads = jax.vmap(jax.grad(schedule))(jnp.array([0.0, 0.5, 1.0]))
    assert bool(jnp.all(jnp.isfinite(grads)))


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("cosine", {}),
        ("cosine", {"logsnr_min": -10.0, "logsnr_max": 5.0}),
        ("shifted_cosine", {"image_size": 256}),
        ("shifted_cosine", {"image_size": 32, "logsnr_min": -15.0, "logsnr_max": 15.0}),
        ("cosine_beta", {}),
        ("cosine_beta", {"logsnr_min": -8.0, "logsnr_max": 8.0}),
    ],
)
def test_schedule_endpoints(name, kwargs):
    lo, hi = kwargs.get("logsnr_min", LOGSNR_MIN), kwargs.get("logsnr_max", LOGSNR_MAX)
    schedule = D.get_schedule(name, **kwargs)
    lam = schedule(jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(lam, [hi, lo], atol=1e-4)


def test_linear_beta_endpoints():
    lam = D.logsnr_linear_beta(jnp.array([0.0, 1.0]))
    # log ᾱ(1) = −(0.1 + 0.5·0.0199·1000) = −10.05, λ = log ᾱ − log(1 − ᾱ) ≈ −10.05.
    expected_end = -10.05 - math.log1p(-math.exp(-10.05))
    np.testing.assert_allclose(lam, [LOGSNR_MAX, expected_end], atol=1e-4)
    clipped = D.logsnr_linear_beta(jnp.array([0.0, 1.0]), logsnr_min=-5.0, logsnr_max=5.0)
    np.testing.assert_allclose(clipped, [5.0, -5.0], atol=1e-5)


def test_cosine_matches_untruncated_closed_form():
    t = np.linspace(0.1, 0.9, 33)
    expected = -2.0 * np.log(np.tan(0.5 * np.pi * t))  # α = cos(πt/2), σ = sin(πt/2)
    np.testing.assert_allclose(D.logsnr_cosine(jnp.asarray(t)), expected, atol=1e-3)


@pytest.mark.parametrize("image_size,base_size", [(256, 64), (32, 64), (64, 64)])
def test_shifted_cosine_is_shifted(image_size, base_size):
    t = jnp.linspace(0.1, 0.9, 33)
    shifted = D.logsnr_shifted_cosine(t, image_size=image_size, base_size=base_size)
    shift = 2.0 * math.log(base_size / image_size)
    # Equal up to the O(e^{(λ_min − shift)/2}) difference in truncation of the underlying cosine.
    np.testing.assert_allclose(shifted, D.logsnr_cosine(t) + shift, atol=5e-3)


def test_linear_beta_matches_alpha_bar_formula():
    t = np.linspace(0.01, 0.99, 50)
    n, b0, b1 = 1000, 1e-4, 0.02
    log_abar = -(b0 * n * t + 0.5 * (b1 - b0) * n * t**2)
    expected = log_abar - np.log1p(-np.exp(log_abar))
    np.testing.assert_allclose(D.logsnr_linear_beta(jnp.asarray(t, jnp.float32)), expected, rtol=1e-4, atol=1e-4)


def test_cosine_beta_matches_nichol_dhariwal_alpha_bar():
    s = 0.008
    t = np.linspace(0.01, 0.99, 50)
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    abar = f(t) / f(0.0)
    expected = np.log(abar) - np.log1p(-abar)
    np.testing.assert_allclose(D.logsnr_cosine_beta(jnp.asarray(t, jnp.float32)), expected, atol=2e-4)


def test_ddpm_table_matches_continuous_linear_beta():
    n = 1000
    table = D.ddpm_logsnr_table(betas=D.linear_betas(num_timesteps=n, beta_start=1e-4, beta_end=0.02))
    assert table.shape == (n,)
    np.testing.assert_allclose(table[0], math.log((1 - 1e-4) / 1e-4), rtol=1e-5)
    t = (jnp.arange(n) + 1.0) / n  # table entry i is the level after i + 1 steps
    cont = D.logsnr_linear_beta(t, num_timesteps=n)
    np.testing.assert_allclose(table, cont, atol=0.15)
    np.testing.assert_allclose(jax.nn.sigmoid(table), jax.nn.sigmoid(cont), atol=2e-3)
    assert bool(jnp.all(jnp.diff(table) < 0))


def test_ddpm_table_matches_continuous_cosine_beta():
    n = 1000
    table = D.ddpm_logsnr_table(betas=D.cosine_betas(num_timesteps=n))
    cont = D.logsnr_cosine_beta((jnp.arange(n) + 1.0) / n)
    # Equal up to float32 error except the last entry, where β is capped at 0.999.
    np.testing.assert_allclose(table[:-1], cont[:-1], atol=2e-3)
    assert bool(jnp.all(jnp.isfinite(table)))


def test_get_schedule_registry():
    sched = D.get_schedule("cosine", logsnr_min=-5.0, logsnr_max=5.0)
    np.testing.assert_allclose(sched(jnp.array([0.0, 1.0])), [5.0, -5.0], atol=1e-5)
    with pytest.raises(ValueError, match="cosine_beta"):
        D.get_schedule("no_such_schedule")
    assert set(D.schedule_names()) == set(SCHEDULE_KWARGS)
    jitted = jax.jit(D.get_schedule("shifted_cosine", image_size=128))
    np.testing.assert_allclose(
        jitted(jnp.array([0.3])), D.logsnr_shifted_cosine(jnp.array([0.3]), image_size=128), rtol=1e-6
    )


# --------------------------------------------------------------------------------------------
# targets


def _random_batch(seed: int, logsnr: jnp.ndarray, feat: tuple[int, ...] = (3, 4)):
    shape = (logsnr.shape[0], *feat)
    return _normal(seed, shape), _normal(seed + 1000, shape)


def _conditioned_atol(z, scale):
    """Float32 round-off of z amplified by 1/scale (α for ε→x0, σ for x0→ε)."""
    return 16 * F32_EPS * (1.0 + jnp.abs(z)) / scale + 1e-6


def test_v_round_trips_all_logsnr():
    lam = _logsnr_with_extremes(64)
    x0, eps = _random_batch(1, lam)
    z = D.q_sample(x0=x0, eps=eps, logsnr=lam)
    v = D.v_from(x0=x0, eps=eps, logsnr=lam)
    np.testing.assert_allclose(D.x0_from_v(z=z, v=v, logsnr=lam), x0, atol=2e-6 * 8)
    np.testing.assert_allclose(D.eps_from_v(z=z, v=v, logsnr=lam), eps, atol=2e-6 * 8)


def test_eps_x0_round_trips_condition_aware():
    lam = _logsnr_with_extremes(64, seed=2)
    x0, eps = _random_batch(3, lam)
    z = D.q_sample(x0=x0, eps=eps, logsnr=lam)
    alpha, sigma = D.alpha_sigma(logsnr=D.bcast_right(lam, ndim=z.ndim))
    x0_rt = D.x0_from_eps(z=z, eps=eps, logsnr=lam)
    eps_rt = D.eps_from_x0(z=z, x0=x0, logsnr=lam)
    assert bool(jnp.all(jnp.abs(x0_rt - x0) <= _conditioned_atol(z, alpha)))
    assert bool(jnp.all(jnp.abs(eps_rt - eps) <= _conditioned_atol(z, sigma)))
    # Where both are well conditioned the round trip is tight.
    mid = jnp.abs(lam) < 5.0
    np.testing.assert_allclose(x0_rt[mid], x0[mid], atol=1e-4)
    np.testing.assert_allclose(eps_rt[mid], eps[mid], atol=1e-4)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_predictions_invert_target(parameterization):
    lam = jnp.linspace(-8.0, 8.0, 33)
    x0, eps = _random_batch(4, lam)
    z = D.q_sample(x0=x0, eps=eps, logsnr=lam)
    out = D.target(x0=x0, eps=eps, logsnr=lam, parameterization=parameterization)
    x0_hat, eps_hat = D.predictions(z=z, model_output=out, logsnr=lam, parameterization=parameterization)
    np.testing.assert_allclose(x0_hat, x0, atol=2e-3)
    np.testing.assert_allclose(eps_hat, eps, atol=2e-3)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_predictions_consistent_with_z(parameterization):
    lam = jnp.linspace(-6.0, 6.0, 25)
    z, out = _random_batch(5, lam)  # arbitrary network output
    x0_hat, eps_hat = D.predictions(z=z, model_output=out, logsnr=lam, parameterization=parameterization)
    np.testing.assert_allclose(D.q_sample(x0=x0_hat, eps=eps_hat, logsnr=lam), z, atol=1e-4)


def test_q_sample_broadcasts_per_example():
    lam = jnp.array([-3.0, 0.0, 4.0])
    x0, eps = _random_batch(6, lam, feat=(2, 5, 5, 3))
    z = D.q_sample(x0=x0, eps=eps, logsnr=lam)
    for i in range(3):
        a, s = D.alpha_sigma(logsnr=lam[i])
        np.testing.assert_allclose(z[i], a * x0[i] + s * eps[i], rtol=1e-6, atol=1e-6)
    jitted = jax.jit(jax.vmap(lambda x, e, l: D.q_sample(x0=x[None], eps=e[None], logsnr=l[None])[0]))
    np.testing.assert_allclose(jitted(x0, eps, lam), z, rtol=1e-6, atol=1e-6)


def test_unknown_parameterization_raises():
    x = jnp.zeros((2, 3))
    lam = jnp.zeros((2,))
    with pytest.raises(ValueError, match="parameterization"):
        D.predictions(z=x, model_output=x, logsnr=lam, parameterization="score")
    with pytest.raises(ValueError, match="parameterization"):
        D.target(x0=x, eps=x, logsnr=lam, parameterization="score")
    with pytest.raises(ValueError, match="weighting"):
        D.diffusion_loss(x0=x, eps=x, logsnr=lam, model_output=x, parameterization="v", weighting="p2")


# --------------------------------------------------------------------------------------------
# losses


def _loss_inputs(seed: int = 7):
    lam = jnp.linspace(-6.0, 6.0, 13)
    x0, eps = _random_batch(seed, lam)
    out = _normal(seed + 100, x0.shape)
    return x0, eps, lam, out


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_loss_space_identities(parameterization):
    """ε-MSE = SNR·x0-MSE and v-MSE = (1 + SNR)·x0-MSE = (1 + 1/SNR)·ε-MSE."""
    x0, eps, lam, out = _loss_inputs()
    loss = {
        space: D.diffusion_loss(
            x0=x0, eps=eps, logsnr=lam, model_output=out, parameterization=parameterization, loss_space=space
        )
        for space in ("eps", "x0", "v")
    }
    snr = jnp.exp(lam)
    np.testing.assert_allclose(loss["eps"], snr * loss["x0"], rtol=2e-4)
    np.testing.assert_allclose(loss["v"], (1 + snr) * loss["x0"], rtol=2e-4)
    np.testing.assert_allclose(loss["v"], (1 + 1 / snr) * loss["eps"], rtol=2e-4)
    # and the commonly misquoted (1 + SNR)·ε-MSE is not it (away from λ → −∞).
    assert not np.allclose(loss["v"][lam > 0], ((1 + snr) * loss["eps"])[lam > 0], rtol=1e-2)


@pytest.mark.parametrize("weighting", ["snr", "snr_plus_one", "truncated_snr", "min_snr_5"])
def test_weighting_independent_of_loss_space(weighting):
    x0, eps, lam, out = _loss_inputs(8)
    losses = [
        D.diffusion_loss(
            x0=x0, eps=eps, logsnr=lam, model_output=out, parameterization="v", loss_space=space, weighting=weighting
        )
        for space in ("eps", "x0", "v")
    ]
    np.testing.assert_allclose(losses[0], losses[1], rtol=2e-4)
    np.testing.assert_allclose(losses[2], losses[1], rtol=2e-4)
    x0_mse = D.diffusion_loss(x0=x0, eps=eps, logsnr=lam, model_output=out, parameterization="v", loss_space="x0")
    snr = np.exp(np.asarray(lam))
    w = {
        "snr": snr,
        "snr_plus_one": 1 + snr,
        "truncated_snr": np.maximum(snr, 1.0),
        "min_snr_5": np.minimum(snr, 5.0),
    }[weighting]
    np.testing.assert_allclose(losses[1], w * x0_mse, rtol=2e-4)


def test_named_weightings_equal_plain_losses():
    x0, eps, lam, out = _loss_inputs(9)
    kw = dict(x0=x0, eps=eps, logsnr=lam, model_output=out, parameterization="eps")
    np.testing.assert_allclose(
        D.diffusion_loss(**kw, loss_space="x0", weighting="snr"), D.diffusion_loss(**kw, loss_space="eps"), rtol=2e-4
    )
    np.testing.assert_allclose(
        D.diffusion_loss(**kw, loss_space="eps", weighting="snr_plus_one"),
        D.diffusion_loss(**kw, loss_space="v"),
        rtol=2e-4,
    )


def test_loss_zero_for_perfect_prediction_and_shape():
    x0, eps, lam, _ = _loss_inputs(10)
    for p in ("eps", "x0", "v"):
        out = D.target(x0=x0, eps=eps, logsnr=lam, parameterization=p)
        loss = D.diffusion_loss(x0=x0, eps=eps, logsnr=lam, model_output=out, parameterization=p, weighting="snr")
        assert loss.shape == lam.shape
        np.testing.assert_allclose(loss, 0.0, atol=1e-10)


def test_mask_restricts_mean():
    lam = jnp.array([-1.0, 0.5, 2.0])
    x0, eps = _random_batch(11, lam, feat=(4, 6))  # e.g. [B, T, C]
    out = _normal(12, x0.shape)
    frame_mask = jnp.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], jnp.float32)[:, :, None]
    masked = D.diffusion_loss(x0=x0, eps=eps, logsnr=lam, model_output=out, parameterization="x0", mask=frame_mask)
    for i, keep in enumerate([2, 1, 4]):
        expected = jnp.mean((out[i, :keep] - x0[i, :keep]) ** 2)
        np.testing.assert_allclose(masked[i], expected, rtol=1e-5)
    none = D.diffusion_loss(x0=x0, eps=eps, logsnr=lam, model_output=out, parameterization="x0")
    assert not np.allclose(masked[:2], none[:2])
    zero = D.diffusion_loss(
        x0=x0, eps=eps, logsnr=lam, model_output=out, parameterization="x0", mask=jnp.zeros_like(frame_mask)
    )
    np.testing.assert_allclose(zero, 0.0)


def test_sample_logsnr_low_discrepancy():
    sched = D.get_schedule("cosine")
    t, lam = D.sample_logsnr(rng=_key(13), batch_size=16, schedule=sched)
    assert t.shape == lam.shape == (16,)
    ts = np.sort(np.asarray(t))
    np.testing.assert_allclose(np.diff(ts), 1 / 16, atol=1e-6)
    assert ts[0] >= 0.0 and ts[-1] < 1.0
    np.testing.assert_allclose(lam, sched(t), rtol=1e-6)
    t2, _ = jax.jit(lambda r: D.sample_logsnr(rng=r, batch_size=16, schedule=sched))(_key(14))
    assert not np.allclose(np.sort(np.asarray(t2)), ts)
    # plain uniform: each t is U[0,1); low-discrepancy keeps each t_i marginally uniform too.
    keys = jax.random.split(_key(15), 2000)
    for ld in (False, True):
        draw = jax.jit(
            jax.vmap(lambda k: D.sample_logsnr(rng=k, batch_size=4, schedule=sched, low_discrepancy=ld)[0])
        )
        ts_many = draw(keys)
        np.testing.assert_allclose(jnp.mean(ts_many, axis=0), 0.5, atol=0.03)


# --------------------------------------------------------------------------------------------
# Gaussian toy: x0 ~ N(μ, s²) per dimension; E[x0 | z] = μ + (α s² / (α² s² + σ²)) (z − α μ).

MU = jnp.array([0.5, -1.0])
STD = jnp.array([0.3, 2.0])


def _gain(logsnr):
    alpha, sigma = D.alpha_sigma(logsnr=logsnr)
    alpha, sigma = alpha[:, None], sigma[:, None]
    return alpha, sigma, alpha * STD**2 / (alpha**2 * STD**2 + sigma**2)


def gaussian_denoiser(z, logsnr, *, gain_scale=1.0, shift=0.0):
    alpha, _, gain = _gain(logsnr)
    return MU + shift + gain_scale * gain * (z - alpha * MU)


def _output_in(parameterization, *, z, x0_hat, logsnr):
    alpha, sigma, _ = _gain(logsnr)
    eps_hat = (z - alpha * x0_hat) / sigma
    return {"x0": x0_hat, "eps": eps_hat, "v": alpha * eps_hat - sigma * x0_hat}[parameterization]


PERTURBATIONS = {
    "optimal": {},
    "shift": {"shift": 0.1},
    "gain_up": {"gain_scale": 1.15},
    "gain_down": {"gain_scale": 0.85},
}


@functools.partial(jax.jit, static_argnames="parameterization")
def _gaussian_expected_losses(x0, eps, lam, *, parameterization):
    """Monte-Carlo expected loss of the optimal and of each perturbed denoiser (same samples)."""
    z = D.q_sample(x0=x0, eps=eps, logsnr=lam)
    losses = []
    for perturb in PERTURBATIONS.values():
        out = _output_in(parameterization, z=z, x0_hat=gaussian_denoiser(z, lam, **perturb), logsnr=lam)
        loss = D.diffusion_loss(x0=x0, eps=eps, logsnr=lam, model_output=out, parameterization=parameterization)
        losses.append(jnp.mean(loss))
    return jnp.stack(losses)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
@pytest.mark.parametrize("logsnr_value", [-4.0, 0.0, 3.0])
def test_gaussian_optimal_denoiser_minimises_loss(parameterization, logsnr_value):
    m = 100_000
    seed = 20 + int(logsnr_value)
    x0 = MU + STD * _normal(seed, (m, 2))
    eps = _normal(seed + 1000, (m, 2))
    lam = jnp.full((m,), logsnr_value)
    losses = _gaussian_expected_losses(x0, eps, lam, parameterization=parameterization)
    losses = dict(zip(PERTURBATIONS, np.asarray(losses)))

    std = np.asarray(STD, np.float64)
    snr = math.exp(logsnr_value)
    alpha2, sigma2 = snr / (1 + snr), 1 / (1 + snr)
    space_factor = {"x0": 1.0, "eps": snr, "v": 1.0 + snr}[parameterization]
    posterior_var = std**2 * sigma2 / (alpha2 * std**2 + sigma2)  # Var[x0 | z]
    np.testing.assert_allclose(losses["optimal"], space_factor * posterior_var.mean(), rtol=0.03)

    gain = math.sqrt(alpha2) * std**2 / (alpha2 * std**2 + sigma2)
    marginal_var = alpha2 * std**2 + sigma2  # Var[z − α μ]
    excess_x0 = {  # E‖D' − D*‖² per element
        "shift": 0.1**2,
        "gain_up": np.mean((0.15 * gain) ** 2 * marginal_var),
        "gain_down": np.mean((0.15 * gain) ** 2 * marginal_var),
    }
    for name, expected in excess_x0.items():
        excess = losses[name] - losses["optimal"]
        assert excess > 0, name
        np.testing.assert_allclose(excess, space_factor * expected, rtol=0.1, err_msg=name)


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_ancestral_sampler_gaussian_moments(gamma):
    n, steps = 100_000, 200
    sched = D.get_schedule("cosine")
    sample = jax.jit(
        lambda rng: D.ancestral_sample(
            denoise_fn=gaussian_denoiser,
            rng=rng,
            shape=(n, 2),
            logsnr_schedule=sched,
            num_steps=steps,
            gamma=gamma,
            clip_x0=False,
        )
    )
    x = np.asarray(sample(_key(30)))
    assert x.shape == (n, 2) and np.all(np.isfinite(x))
    mean, std = x.mean(0), x.std(0)
    np.testing.assert_allclose(mean, MU, atol=5 * float(STD.max()) / math.sqrt(n))
    np.testing.assert_allclose(std, STD, rtol=0.04)  # O(1/N) discretisation bias ≤ 3% at N=200
    # Tighter: the exact std of this linear-Gaussian chain at N steps (float64 recursion).
    np.testing.assert_allclose(std, _exact_chain_std(steps=steps, gamma=gamma), rtol=0.012)


def _exact_chain_std(*, steps: int, gamma: float) -> np.ndarray:
    """Std of the sampler output for the Gaussian toy, by propagating the variance exactly."""
    b = math.atan(math.exp(-10.0))
    a = math.atan(math.exp(10.0)) - b
    lam = lambda t: -2.0 * math.log(math.tan(a * t + b))  # noqa: E731
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    std = np.asarray(STD, np.float64)
    var = np.ones(2)
    for k in range(steps, 1, -1):
        lt, ls = lam(k / steps), lam((k - 1) / steps)
        at, st2, as_, ss2 = math.sqrt(sig(lt)), sig(-lt), math.sqrt(sig(ls)), sig(-ls)
        # DDPM-style posterior: α_{t|s} = α_t/α_s, σ²_{t|s} = σ_t² − α_{t|s}² σ_s².
        a_ts = at / as_
        s2_ts = st2 - a_ts**2 * ss2
        coef_z, coef_x = a_ts * ss2 / st2, as_ * s2_ts / st2
        var_step = (s2_ts * ss2 / st2) ** (1 - gamma) * s2_ts**gamma
        gain = at * std**2 / (at**2 * std**2 + st2)
        var = (coef_z + coef_x * gain) ** 2 * var + var_step
    lt = lam(1 / steps)
    at, st2 = math.sqrt(sig(lt)), sig(-lt)
    return np.sqrt((at * std**2 / (at**2 * std**2 + st2)) ** 2 * var)


def test_ancestral_posterior_matches_ddpm_form():
    lt, ls = jnp.array([-3.0, 0.5, 4.0]), jnp.array([-1.0, 2.0, 9.0])
    z, x0 = _random_batch(40, lt, feat=(5,))
    for gamma in (0.0, 0.3, 1.0):
        mean, log_var = D.ancestral_posterior(z_t=z, x0_hat=x0, logsnr_t=lt, logsnr_s=ls, gamma=gamma)
        for i in range(3):
            at, st2 = math.sqrt(1 / (1 + math.exp(-lt[i]))), 1 / (1 + math.exp(lt[i]))
            as_, ss2 = math.sqrt(1 / (1 + math.exp(-ls[i]))), 1 / (1 + math.exp(ls[i]))
            a_ts = at / as_
            s2_ts = st2 - a_ts**2 * ss2
            expected_mean = a_ts * ss2 / st2 * z[i] + as_ * s2_ts / st2 * x0[i]
            expected_var = (s2_ts * ss2 / st2) ** (1 - gamma) * s2_ts**gamma
            np.testing.assert_allclose(mean[i], expected_mean, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(jnp.exp(log_var[i]), expected_var, rtol=1e-4)


def test_ancestral_sample_traces_once_and_clips():
    calls = []

    def denoise_fn(z, logsnr):
        calls.append(logsnr.shape)
        return 3.0 * z  # deliberately out of range, to exercise clipping

    @jax.jit
    @chex.assert_max_traces(n=1)
    def sample(rng):
        return D.ancestral_sample(
            denoise_fn=denoise_fn, rng=rng, shape=(4, 3, 2), logsnr_schedule=D.logsnr_cosine, num_steps=50,
            clip_x0=True,  # opt-in (the default is False)
        )

    x1, x2 = sample(_key(50)), sample(_key(51))
    assert len(calls) == 2, "loop body + final call, independent of num_steps"
    assert all(shape == (4,) for shape in calls)
    assert x1.shape == (4, 3, 2) and x1.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(x1))) <= 1.0 and not np.allclose(x1, x2)
    assert float(jnp.max(jnp.abs(x1))) == 1.0  # clipping actually happened


def test_scaled_linear_beta_matches_its_discrete_betas():
    # PVDM's official schedule: LDM's betas linear in √β from 0.0015 to 0.0195, N = 1000.
    n = 1000
    table = D.ddpm_logsnr_table(betas=jnp.asarray(D.scaled_linear_betas(num_timesteps=n)))
    t = (jnp.arange(n) + 1.0) / n  # table entry i is the level after i + 1 steps
    cont = D.logsnr_scaled_linear_beta(t, num_timesteps=n)
    # The continuous form integrates β instead of summing log(1 − β): they part by Σβ²/2.
    np.testing.assert_allclose(table[n // 20:], cont[n // 20:], atol=0.1)
    np.testing.assert_allclose(jax.nn.sigmoid(table), jax.nn.sigmoid(cont), atol=2e-3)
    np.testing.assert_allclose(float(cont[-1]), -8.80, atol=0.02)  # terminal λ
    np.testing.assert_allclose(float(table[-1]), -8.857, atol=2e-3)
    assert float(D.logsnr_scaled_linear_beta(jnp.float32(0.0))) == LOGSNR_MAX
    assert bool(jnp.all(jnp.diff(cont) < 0))


def test_scaled_linear_beta_with_equal_ends_is_constant_beta():
    t = np.linspace(0.05, 1.0, 20)
    beta = 0.004
    log_abar = -1000 * beta * t
    expected = log_abar - np.log1p(-np.exp(log_abar))
    got = D.logsnr_scaled_linear_beta(jnp.asarray(t, jnp.float32), beta_start=beta, beta_end=beta)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
