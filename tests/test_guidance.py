"""Guidance on Gaussian data, against exact answers.

* Classifier-free guidance: with p(x|c) = N(μ_c, Σ_c) and p(x) = N(μ_0, Σ_0) the guided x̂0 is
  affine in z, so the probability-flow ODE the sampler solves has an exact (RK4, float64)
  solution map; with Σ_0 = Σ_c it is exactly the unguided flow of N(μ_0 + s(μ_c − μ_0), Σ_c).
* Reconstruction guidance vs replacement: a correlated 8-dim Gaussian laid out as a
  [B, T=2, H=2, W=2, C=1] video; the exact answer is the Gaussian conditional given frame 0
  (prediction) or given the 2×2 average-pooled frames (super-resolution).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from vdiff import diffusion as D
from vdiff.diffusion import guidance as G
from vdiff.diffusion import samplers as S
from tests.test_samplers import (
    MU,
    SIGMA,
    SCHEDULE,
    chain_law,
    gaussian_affine,
    gaussian_params,
    gaussian_x0,
    initial_noise,
    mc_tolerance,
    np_alpha_sigma,
    ode_map,
    path_error,
    random_gaussian,
    sample_errors,
    step_ops,
    whitened_errors,
)


def _key(i: int) -> jax.Array:
    return jax.random.PRNGKey(i)


def _normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


# --------------------------------------------------------------------------------------------
# ε combinations


def test_classifier_free_eps_conventions():
    e0, e1, e2 = _normal(0, (3, 5)), _normal(1, (3, 5)), _normal(2, (3, 5))
    np.testing.assert_allclose(G.classifier_free_eps(e0, e1, scale=1.0), e1, atol=1e-6)  # s = 1: conditional
    np.testing.assert_allclose(G.classifier_free_eps(e0, e1, scale=0.0), e0, atol=1e-6)
    w = 2.5  # VDM / methods/vdm/method.py weight: (1 + w) ε(c) − w ε(∅) is scale s = 1 + w
    np.testing.assert_allclose(G.classifier_free_eps(e0, e1, scale=1.0 + w), (1 + w) * e1 - w * e0, atol=1e-5)
    scale = jnp.array([0.0, 1.0, 3.0])[:, None]  # per-example scales broadcast
    per_example = G.classifier_free_eps(e0, e1, scale=scale)
    np.testing.assert_allclose(per_example[2], e0[2] + 3 * (e1[2] - e0[2]), atol=1e-5)
    np.testing.assert_allclose(per_example[0], e0[0], atol=1e-6)

    s1, s2 = 1.5, 4.0  # DreamPose: ε(∅) + s_I (ε(c_I) − ε(∅)) + s_P (ε(c_I, c_P) − ε(c_I))
    np.testing.assert_allclose(
        G.multi_condition_eps([e0, e1, e2], [s1, s2]), e0 + s1 * (e1 - e0) + s2 * (e2 - e1), atol=1e-5
    )
    np.testing.assert_allclose(G.multi_condition_eps([e0, e1, e2], [1.0, 1.0]), e2, atol=1e-5)
    np.testing.assert_allclose(G.multi_condition_eps([e0, e1], [2.0]), G.classifier_free_eps(e0, e1, scale=2.0))
    np.testing.assert_array_equal(G.multi_condition_eps([e0], []), e0)
    with pytest.raises(ValueError, match="scales"):
        G.multi_condition_eps([e0, e1], [1.0, 2.0])
    with pytest.raises(ValueError, match="scales"):
        G.guided_denoiser([lambda z, l: z], [1.0])


def test_guided_denoiser_equals_x0_space_combination():
    """Weights sum to one, so guiding ε or x̂0 gives the same x̂0; any parameterisation fits."""
    z, lam = _normal(3, (6, 4)), jnp.linspace(-6.0, 6.0, 6)
    params = [gaussian_params(MU, SIGMA), gaussian_params(MU + 0.5, 2.0 * SIGMA), gaussian_params(-MU, SIGMA)]
    x0_fns = [functools.partial(gaussian_x0, **p) for p in params]
    eps_fns = [lambda z, l, f=f: D.eps_from_x0(z=z, x0=f(z, l), logsnr=l) for f in x0_fns]
    scales = [2.0, 0.5]
    got = G.guided_denoiser(eps_fns, scales)(z, lam)
    expected = G.multi_condition_eps([f(z, lam) for f in x0_fns], scales)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # a v-parameterised model goes through targets.predictions first
    def eps_from_v_model(z, lam):
        v = D.v_from(x0=x0_fns[1](z, lam), eps=eps_fns[1](z, lam), logsnr=lam)
        return D.predictions(z=z, model_output=v, logsnr=lam, parameterization="v")[1]

    conditional = G.guided_denoiser([eps_fns[0], eps_from_v_model], [1.0])(z, lam)
    np.testing.assert_allclose(conditional, x0_fns[1](z, lam), atol=1e-4)


NULL_CLASS = 10


def _v_model(v_cond, v_null):
    """`predict(z, λ, labels) -> (x̂0, ε̂)` of a v-parameterised "network" with fixed outputs."""
    def predict(z, logsnr, labels):
        v = jnp.where((labels == NULL_CLASS)[:, None], v_null, v_cond)
        return D.predictions(z=z, model_output=v, logsnr=logsnr, parameterization="v")
    return predict


def test_class_guidance_is_well_conditioned_at_lowest_logsnr():
    """At λ = −20 (α ≈ 4.5e-5) in float32 the guided x̂0 of a v-network matches the float64
    reference x̃0 = (1 + w) x̂0(c) − w x̂0(∅), x̂0 = α z − σ v.  Mixing ε = σ z + α v and then
    dividing by α (the old code) loses the α v part to float32 rounding: max error 1.6e-2
    before, 1.4e-6 after (w = 3, |x̃0| up to ~20)."""
    b, d, w = 64, 16, 3.0
    z, v_c, v_n = _normal(80, (b, d)), _normal(81, (b, d)), _normal(82, (b, d))
    lam = jnp.full((b,), -20.0)
    labels = jnp.zeros((b,), jnp.int32)
    got = G.class_guided_denoiser(_v_model(v_c, v_n), labels, null_class=NULL_CLASS, weight=w)(z, lam)
    a, s = np_alpha_sigma(-20.0)
    z64, vc64, vn64 = (np.asarray(x, np.float64) for x in (z, v_c, v_n))
    ref = (1 + w) * (a * z64 - s * vc64) - w * (a * z64 - s * vn64)
    err = float(np.max(np.abs(np.asarray(got, np.float64) - ref)))
    assert err < 1e-5, err


def test_class_guidance_weight_may_be_traced():
    """The weight may be a jit argument (a tracer has no truth value); a Python 0 skips the
    unconditional network call, a traced 0 gives the same x̂0 with two calls."""
    b, d = 4, 3
    z, v_c, v_n = _normal(83, (b, d)), _normal(84, (b, d)), _normal(85, (b, d))
    lam, labels = jnp.linspace(-5.0, 5.0, b), jnp.arange(b, dtype=jnp.int32)
    calls = []

    def predict(z, logsnr, labels):
        calls.append(1)
        return _v_model(v_c, v_n)(z, logsnr, labels)

    def guided(weight):
        return G.class_guided_denoiser(predict, labels, null_class=NULL_CLASS, weight=weight)(z, lam)

    jitted = jax.jit(guided)
    for w in (0.0, 2.5):
        calls.clear()
        eager = guided(w)
        assert len(calls) == (1 if w == 0.0 else 2)
        calls.clear()
        np.testing.assert_allclose(jitted(jnp.float32(w)), eager, rtol=1e-6, atol=1e-6)
        assert len(calls) == (2 if w == 0.0 else 0)  # traced once, with both predictions
    x0_c = D.predictions(z=z, model_output=v_c, logsnr=lam, parameterization="v")[0]
    np.testing.assert_allclose(guided(0.0), x0_c, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------
# classifier-free guidance: guided probability-flow ODE on Gaussians

CFG_SCALE = 3.0
CFG_STEPS = 100
CFG_SAMPLES = 100_000


def _cfg_gaussians(equal_cov: bool):
    """p(x|c) = N(μ_c, Σ_c), p(x) = N(μ_0, Σ_0) with Σ_0 = Σ_c (+ a rank-2 between-class spread)."""
    rng = np.random.default_rng(11)
    mu0 = MU + np.array([0.8, -0.5, 0.3, 0.2])
    spread = rng.standard_normal((4, 2))
    cov0 = SIGMA if equal_cov else SIGMA + 0.3 * spread @ spread.T
    return (mu0, cov0), (MU, SIGMA)


@functools.partial(jax.jit, static_argnames=("shape",))
def _run_cfg(rng, scale, uncond, cond, *, shape):
    eps_fns = [
        lambda z, l, p=p: D.eps_from_x0(z=z, x0=gaussian_x0(z, l, **p), logsnr=l) for p in (uncond, cond)
    ]
    return S.dpm_solver_pp_2m_sample(
        denoise_fn=G.guided_denoiser(eps_fns, [scale]), rng=rng, shape=shape,
        logsnr_schedule=SCHEDULE, num_steps=CFG_STEPS,
    )


@functools.partial(jax.jit, static_argnames=("shape",))
def _run_plain(rng, params, *, shape):
    return S.dpm_solver_pp_2m_sample(
        denoise_fn=functools.partial(gaussian_x0, **params), rng=rng, shape=shape,
        logsnr_schedule=SCHEDULE, num_steps=CFG_STEPS,
    )


def _guided_affine(scale, uncond, cond):
    """x̂0_guided = (1 − s) x̂0(z | ∅) + s x̂0(z | c), as (K, k) per λ."""
    f0, fc = gaussian_affine(*uncond), gaussian_affine(*cond)

    def affine(logsnr):
        (k0, o0), (kc, oc) = f0(logsnr), fc(logsnr)
        return (1 - scale) * k0 + scale * kc, (1 - scale) * o0 + scale * oc

    return affine


@pytest.mark.parametrize("equal_cov", [True, False], ids=["equal_cov", "different_cov"])
def test_classifier_free_guidance_gaussian_flow(equal_cov):
    uncond, cond = _cfg_gaussians(equal_cov)
    shape = (CFG_SAMPLES, 4)
    x = np.asarray(_run_cfg(_key(20), CFG_SCALE, gaussian_params(*uncond), gaussian_params(*cond), shape=shape))
    z1 = initial_noise(_key(20), shape)
    exact = ode_map(_guided_affine(CFG_SCALE, uncond, cond), CFG_STEPS)
    law_mean, law_cov = exact[1], exact[0] @ exact[0].T

    # Path by path the sampler solves the guided ODE (DPM-Solver++ error at 100 steps ≈ 0.003).
    assert path_error(x, z1, exact, law_cov) < 0.01
    tol_mean, tol_cov = mc_tolerance(CFG_SAMPLES, 4)
    err_mean, err_cov = sample_errors(x, law_mean, law_cov)
    assert err_mean < tol_mean and err_cov < tol_cov, (err_mean, err_cov)

    mu_g = uncond[0] + CFG_SCALE * (cond[0] - uncond[0])
    if equal_cov:
        # Exactly the unguided flow of N(μ_0 + s(μ_c − μ_0), Σ): same samples from the same z_1.
        plain = _run_plain(_key(20), gaussian_params(mu_g, SIGMA), shape=shape)
        np.testing.assert_allclose(x, plain, atol=5e-4)
        assert whitened_errors(law_mean, law_cov, mu_g, SIGMA)[0] < 1e-3
    else:
        # The guided law is neither the conditional nor the mean-extrapolated guess; a test using
        # the VDM weight w = s − 1 as the scale would land elsewhere too.
        assert min(whitened_errors(law_mean, law_cov, mu_g, SIGMA)) > 0.5
        assert whitened_errors(law_mean, law_cov, *cond)[0] > 1.0
        wrong = ode_map(_guided_affine(CFG_SCALE - 1, uncond, cond), CFG_STEPS)
        assert sample_errors(x, wrong[1], wrong[0] @ wrong[0].T)[0] > 10 * tol_mean


# --------------------------------------------------------------------------------------------
# reconstruction guidance and replacement on a Gaussian "video" [B, 2, 2, 2, 1]

VIDEO = (2, 2, 2, 1)
VDIM = 8
V_MU, V_SIGMA = random_gaussian(1, (0.05, 0.1, 0.2, 0.4, 0.7, 1.0, 1.5, 2.5))
V_TRUE = V_MU + np.linalg.cholesky(V_SIGMA) @ np.random.default_rng(2).standard_normal(VDIM)
FRAME_MASK = np.array([1.0, 0.0])  # observe frame 0 (coordinates 0–3), predict frame 1
P_MASK = np.diag(np.repeat(FRAME_MASK, 4))
A_POOL = np.kron(np.eye(2), np.full((1, 4), 0.25))  # 2×2 average pooling of each frame
RG_STEPS = 50
RG_SAMPLES = 40_000
RG_GAMMA = 1.0


def _video(x: np.ndarray) -> jax.Array:
    return jnp.asarray(x.reshape((1,) + VIDEO), jnp.float32)


@functools.partial(jax.jit, static_argnames=("method", "shape"))
def _run_video(rng, weight, params, observation, *, method: str, shape):
    """Ancestral sampling conditioned by 'rg_frames' | 'rg_pool' | 'replacement' | 'rg_replacement'.

    'rg_replacement' is VDM's combination: replacement of z^a, reconstruction guidance on z^b.
    """
    den = functools.partial(gaussian_x0, **params)
    mask = G.video_frame_mask(jnp.asarray(FRAME_MASK))
    post_step_fn = None
    if method in ("rg_frames", "rg_replacement"):
        den = G.reconstruction_guided_denoiser(
            den, observation=observation * mask, observe_fn=G.frame_mask_observe_fn(FRAME_MASK), weight=weight,
            grad_mask=(1.0 - mask) if method == "rg_replacement" else None,
        )
    elif method == "rg_pool":
        den = G.reconstruction_guided_denoiser(
            den, observation=observation, observe_fn=G.downsample_observe_fn(2), weight=weight
        )
    if method in ("replacement", "rg_replacement"):
        post_step_fn = G.replacement_post_step(observation=observation, mask=mask)
        den = G.replacement_denoiser(den, observation=observation, mask=mask)
    return S.ancestral_sample(
        denoise_fn=den, rng=rng, shape=shape, logsnr_schedule=SCHEDULE, num_steps=RG_STEPS,
        gamma=RG_GAMMA, clip_x0=False, post_step_fn=post_step_fn,
    )


def _rg_affine(a_mat: np.ndarray, y: np.ndarray, weight: float, grad_mask: np.ndarray | None = None):
    """x̃0 = x̂0 + w α Q Kᵀ Aᵀ (y − A x̂0) with x̂0 = K z + k (VDM eq. 7 for the Gaussian; Q = grad mask)."""
    base = gaussian_affine(V_MU, V_SIGMA)
    q = np.eye(VDIM) if grad_mask is None else grad_mask

    def affine(logsnr):
        gain, offset = base(logsnr)
        pull = weight * np_alpha_sigma(logsnr)[0] * q @ gain.T @ a_mat.T
        return gain - pull @ a_mat @ gain, offset + pull @ (y - a_mat @ offset)

    return affine


def _replacement_law(x_obs: np.ndarray, affine=None):
    """(affine, hook) of the replacement method around `affine` (default: the plain denoiser)."""
    base = affine or gaussian_affine(V_MU, V_SIGMA)
    keep = np.eye(VDIM) - P_MASK

    def replaced(logsnr):
        gain, offset = base(logsnr)
        return keep @ gain, keep @ offset + P_MASK @ x_obs

    def hook(logsnr_s, mean, cov):
        a, s = np_alpha_sigma(logsnr_s)
        return keep @ mean + a * P_MASK @ x_obs, keep @ cov @ keep + s * s * P_MASK

    return replaced, hook


def _linear_conditional(a_mat: np.ndarray, y: np.ndarray):
    """x | A x = y for x ~ N(μ, Σ): N(μ + Σ Aᵀ (A Σ Aᵀ)⁻¹ (y − A μ), Σ − Σ Aᵀ (A Σ Aᵀ)⁻¹ A Σ)."""
    gain = V_SIGMA @ a_mat.T @ np.linalg.inv(a_mat @ V_SIGMA @ a_mat.T)
    return V_MU + gain @ (y - a_mat @ V_MU), V_SIGMA - gain @ a_mat @ V_SIGMA


def _ops(lt, ls):
    return step_ops("ancestral", {"gamma": RG_GAMMA}, lt, ls)


def _sub(mean, cov, idx):
    return mean[idx], cov[np.ix_(idx, idx)]


RG_WEIGHT_FRAMES = 4.0


def test_reconstruction_guidance_beats_replacement():
    """Predict frame 1 from frame 0: moments of x^b against N(μ_b|a, Σ_b|a).

    Replacement, reconstruction guidance (w_r = 4, ∇ over all of z) and VDM's combination
    (replacement of z^a, w_r = 4 on z^b).  float64 chain laws, whitened by Σ_b|a:
    replacement (2.31, 1.22), RG (0.29, 0.11), combination (0.18, 0.29).
    """
    params = gaussian_params(V_MU, V_SIGMA)
    shape = (RG_SAMPLES,) + VIDEO
    obs = _video(V_TRUE)
    x_obs = P_MASK @ V_TRUE
    a, b = np.arange(4), np.arange(4, 8)
    cond = _sub(*_linear_conditional(P_MASK[:4], V_TRUE[:4]), b)
    w = RG_WEIGHT_FRAMES
    replaced_plain, replace_hook = _replacement_law(x_obs)
    replaced_rg, _ = _replacement_law(x_obs, _rg_affine(P_MASK, x_obs, w, np.eye(VDIM) - P_MASK))
    laws = {
        "replacement": chain_law(replaced_plain, RG_STEPS, _ops, hook=replace_hook, dim=VDIM),
        "rg_frames": chain_law(_rg_affine(P_MASK, x_obs, w), RG_STEPS, _ops, dim=VDIM),
        "rg_replacement": chain_law(replaced_rg, RG_STEPS, _ops, hook=replace_hook, dim=VDIM),
    }
    errors = {}
    for method, law in laws.items():
        x = np.asarray(_run_video(_key(30), w, params, obs, method=method, shape=shape)).reshape(-1, VDIM)
        # the JAX chain has the law of the float64 chain, to MC precision ...
        if method == "rg_frames":  # x^a is random too: compare all 8 coordinates
            tol_mean, tol_cov = mc_tolerance(RG_SAMPLES, VDIM)
            err = sample_errors(x, *law)
        else:  # x^a is imposed exactly
            np.testing.assert_array_equal(x[:, a], np.broadcast_to(np.float32(V_TRUE[:4]), (RG_SAMPLES, 4)))
            tol_mean, tol_cov = mc_tolerance(RG_SAMPLES, 4)
            err = sample_errors(x[:, b], *_sub(*law, b))
        assert err[0] < tol_mean and err[1] < tol_cov, (method, err, tol_mean, tol_cov)
        # ... and this is how far each is from the exact conditional
        errors[method] = sample_errors(x[:, b], *cond)
    assert errors["rg_frames"][0] < 0.35 and errors["rg_frames"][1] < 0.2, errors
    assert errors["rg_replacement"][0] < 0.25 and errors["rg_replacement"][1] < 0.4, errors
    for method in ("rg_frames", "rg_replacement"):
        assert errors["replacement"][0] > 4 * errors[method][0], errors
        assert errors["replacement"][1] > 2.5 * errors[method][1], errors


RG_WEIGHT_POOL = 8.0  # ≈ 2 f²: 2×2 mean pooling scales ‖A‖² by 1/f²


def test_reconstruction_guidance_super_resolution():
    params = gaussian_params(V_MU, V_SIGMA)
    shape = (RG_SAMPLES,) + VIDEO
    y = A_POOL @ V_TRUE
    observation = G.downsample_observe_fn(2)(_video(V_TRUE))
    np.testing.assert_allclose(np.asarray(observation).reshape(-1), y, rtol=1e-6)
    null = np.linalg.svd(A_POOL)[2][2:].T  # basis of the directions A does not see
    cond_mean, cond_cov = _linear_conditional(A_POOL, y)
    law = chain_law(_rg_affine(A_POOL, y, RG_WEIGHT_POOL), RG_STEPS, _ops, dim=VDIM)

    x = np.asarray(_run_video(_key(31), RG_WEIGHT_POOL, params, observation, method="rg_pool", shape=shape))
    x = x.reshape(-1, VDIM)
    unguided = chain_law(gaussian_affine(V_MU, V_SIGMA), RG_STEPS, _ops, dim=VDIM)

    proj = lambda m, c: (null.T @ m, null.T @ c @ null)  # noqa: E731
    tol_mean, tol_cov = mc_tolerance(RG_SAMPLES, 6)
    err = sample_errors(x @ null, *proj(*law))
    assert err[0] < tol_mean and err[1] < tol_cov, err
    # float64 laws, whitened by the conditional: RG (0.07, 0.19), unguided (1.57, 2.77)
    err_rg = sample_errors(x @ null, *proj(cond_mean, cond_cov))
    err_none = whitened_errors(*proj(*unguided), *proj(cond_mean, cond_cov))
    assert err_rg[0] < 0.15 and err_rg[1] < 0.3, err_rg
    assert err_none[0] > 5 * err_rg[0] and err_none[1] > 5 * err_rg[1], (err_rg, err_none)
    # low-resolution consistency, A(x) = y per sample (unguided: rms 0.65)
    assert np.sqrt(np.mean((x @ A_POOL.T - y) ** 2)) < 0.05


@jax.jit
def _rg_calls(z, lam, weight, params):
    den = functools.partial(gaussian_x0, **params)
    mask_obs = _video(P_MASK @ V_TRUE)
    pool_obs = jnp.asarray((A_POOL @ V_TRUE).reshape(1, 2, 1, 1, 1), jnp.float32)
    frames = G.frame_mask_observe_fn(FRAME_MASK)
    guided = functools.partial(G.reconstruction_guided_denoiser, den, observe_fn=frames, observation=mask_obs)
    keep = 1.0 - G.video_frame_mask(jnp.asarray(FRAME_MASK))
    return {
        "mask": guided(weight=weight)(z, lam),
        "pool": G.reconstruction_guided_denoiser(
            den, observation=pool_obs, observe_fn=G.downsample_observe_fn(2), weight=weight)(z, lam),
        "plain": den(z, lam),
        "full": guided(weight=2.0)(z, lam),
        "part": guided(weight=2.0, grad_mask=keep)(z, lam),
        "one_by_one": jax.vmap(lambda zi, li: guided(weight=2.0)(zi[None], li[None])[0])(z, lam),
        "keep": jnp.broadcast_to(keep, z.shape),
    }


def test_reconstruction_guided_denoiser_formula():
    """One call equals x̂0 + w α Kᵀ Aᵀ (y − A x̂0) for a frame mask and for pooling, per example."""
    lam = jnp.array([-6.0, -1.0, 0.0, 2.0, 5.0])
    z = _normal(40, (5,) + VIDEO)
    weight = jnp.array([1.0, 2.0, 3.0, 0.5, 4.0])
    out = _rg_calls(z, lam, weight, gaussian_params(V_MU, V_SIGMA))
    out = {k: np.asarray(v, np.float64) for k, v in out.items()}
    for name, a_mat in (("mask", P_MASK), ("pool", A_POOL)):
        y = a_mat @ (P_MASK @ V_TRUE if name == "mask" else V_TRUE)
        for i in range(5):
            gain, offset = _rg_affine(a_mat, y, float(weight[i]))(float(lam[i]))
            expected = gain @ np.asarray(z[i], np.float64).reshape(-1) + offset
            np.testing.assert_allclose(out[name][i].reshape(-1), expected, rtol=1e-4, atol=1e-4)
    # grad_mask restricts the correction to part of z (VDM's ∇_{z^b}); here: the unobserved frame
    part, full, plain = out["part"], out["full"], out["plain"]
    np.testing.assert_allclose(part - plain, out["keep"] * (full - plain), atol=1e-5)
    assert np.max(np.abs(part - plain)) > 1e-2
    # the batch-summed error gives each example its own gradient: batched call = per-example calls
    np.testing.assert_allclose(full, out["one_by_one"], rtol=1e-5, atol=1e-5)


def test_observe_fns():
    x = _normal(50, (3, 4, 6, 8, 2))  # [B, T, H, W, C]
    pooled = G.downsample_observe_fn(2)(x)
    expected = np.asarray(x).reshape(3, 4, 3, 2, 4, 2, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(pooled, expected, rtol=1e-6, atol=1e-6)
    assert G.downsample_observe_fn(3)(x[:, :, :6, :6]).shape == (3, 4, 2, 2, 2)
    np.testing.assert_allclose(G.downsample_observe_fn(1)(x), x)
    # linear, and mean pooling of a nearest-neighbour upsampling is the identity
    y = _normal(51, (3, 4, 3, 4, 2))
    up = jnp.repeat(jnp.repeat(y, 2, axis=2), 2, axis=3)
    np.testing.assert_allclose(G.downsample_observe_fn(2)(up), y, atol=1e-6)
    np.testing.assert_allclose(G.downsample_observe_fn(2)(2 * x + up), 2 * pooled + y, atol=1e-5)
    with pytest.raises(ValueError):
        G.downsample_observe_fn(0)

    frames = jnp.array([1.0, 0.0, 0.0, 1.0])
    masked = G.frame_mask_observe_fn(frames)(x)
    np.testing.assert_array_equal(masked[:, [0, 3]], x[:, [0, 3]])
    np.testing.assert_array_equal(masked[:, [1, 2]], 0.0)
    per_example = jnp.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]], bool)
    assert G.video_frame_mask(per_example).shape == (3, 4, 1, 1, 1)
    masked = G.frame_mask_observe_fn(per_example)(x)
    np.testing.assert_array_equal(masked[1, :2], x[1, :2])
    np.testing.assert_array_equal(masked[1, 2:], 0.0)


def test_replacement_post_step_draws_q_of_observation():
    n = 20_000
    x_obs = _normal(60, (1, 2, 3))
    mask = jnp.array([True, False])[None, :, None]
    z = _normal(61, (n, 2, 3))
    lam = jnp.full((n,), 1.5)
    out = np.asarray(G.replacement_post_step(observation=x_obs, mask=mask)(z, lam, _key(62)))
    np.testing.assert_array_equal(out[:, 1], z[:, 1])  # unobserved part untouched
    alpha, sigma = (float(v) for v in D.alpha_sigma(logsnr=jnp.float32(1.5)))
    np.testing.assert_allclose(out[:, 0].mean(0), alpha * np.asarray(x_obs[0, 0]), atol=4 * sigma / np.sqrt(n))
    np.testing.assert_allclose(out[:, 0].std(0), sigma, rtol=0.03)
    other = np.asarray(G.replacement_post_step(observation=x_obs, mask=mask)(z, lam, _key(63)))
    assert not np.allclose(other[:, 0], out[:, 0])  # fresh noise per key
    x0 = G.replacement_denoiser(lambda z, l: 2 * z, observation=x_obs, mask=mask)(z, lam)
    np.testing.assert_array_equal(x0[:, 0], np.broadcast_to(x_obs[0, 0], (n, 3)))
    np.testing.assert_array_equal(x0[:, 1], 2 * z[:, 1])


def test_guided_sampling_sharded_equals_unsharded():
    """Reconstruction guidance + replacement with a per-example observation sharded over 8 devices."""
    mesh = jax.make_mesh((8,), ("batch",), axis_types=(AxisType.Auto,), devices=jax.devices())
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    params = gaussian_params(V_MU, V_SIGMA)
    observation = _normal(70, (64,) + VIDEO)
    mask = G.video_frame_mask(jnp.asarray(FRAME_MASK))

    def run(rng, observation):
        den = G.reconstruction_guided_denoiser(
            functools.partial(gaussian_x0, **params), observation=observation * mask,
            observe_fn=G.frame_mask_observe_fn(FRAME_MASK), weight=2.0, grad_mask=1.0 - mask,
        )
        return S.pc_sample(
            denoise_fn=den, rng=rng, shape=observation.shape, logsnr_schedule=SCHEDULE, num_steps=12,
            post_step_fn=G.replacement_post_step(observation=observation, mask=mask),
        )

    expected = jax.jit(run)(_key(71), observation)
    sharded = jax.jit(run, in_shardings=(None, sharding), out_shardings=sharding)
    compiled = sharded.lower(_key(71), observation).compile()
    got = compiled(_key(71), jax.device_put(observation, sharding))
    assert {s.data.shape for s in got.addressable_shards} == {(8,) + VIDEO}
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    hlo = compiled.as_text()
    assert "all-gather" not in hlo and "all-to-all" not in hlo
