"""SinFusion: NextNet receptive field, k-curriculum, role plumbing, training, applications."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vdiff.errors import ConfigError
from vdiff.methods import sinfusion as sf
from vdiff.methods.sinfusion import apps
from vdiff.models.nextnet import NextNet, receptive_field
from vdiff.train.sharding import strip_boxes
from vdiff.train.state import TrainState
from vdiff.train.train_step import train_step

C = 3


def tiny_config(role: str, num_frames: int | None = None):
    """Width 8, depth 2, 17×17 frames → 16×16 crops, 4 sampling steps."""
    c = sf.sinfusion_defaults(role)
    c.data.resolution, c.data.frame_size = 17, (17, 17)
    c.data.channels = C
    c.data.num_frames = num_frames or (1 if role == "image" else 6)
    c.model.width, c.model.depth = 8, 2
    c.sinfusion.curriculum_stage_steps = 10
    c.sample.num_steps = 4
    return c


def frame_index_video(batch: int, num_frames: int, size: int = 4) -> jax.Array:
    """Float video whose frame i is the constant i / 10."""
    t = jnp.arange(num_frames, dtype=jnp.float32) / 10.0
    return jnp.broadcast_to(t[None, :, None, None, None], (batch, num_frames, size, size, C))


# --------------------------------------------------------------------------------------------
# NextNet


@pytest.mark.parametrize("depth", [2, 3])
def test_receptive_field_matches_input_gradient(depth):
    size = receptive_field(depth) + 12
    net = NextNet(out_channels=1, width=8, depth=depth, zero_init_output=False)
    x = jax.random.normal(jax.random.key(0), (1, size, size, 2))
    params = net.init(jax.random.key(1), x, jnp.zeros((1,)))
    c = size // 2
    grad = jax.jit(jax.grad(lambda x: net.apply(params, x, jnp.full((1,), 1.0))[0, c, c, 0]))(x)
    support = np.abs(np.asarray(grad[0])).sum(-1) > 0
    rows, cols = np.nonzero(support.any(1))[0], np.nonzero(support.any(0))[0]
    assert rows[-1] - rows[0] + 1 == receptive_field(depth)
    assert cols[-1] - cols[0] + 1 == receptive_field(depth)
    assert rows[0] > 0 and rows[-1] < size - 1  # the field fit inside the input
    assert receptive_field(16) == 165


def test_nextnet_fully_convolutional_and_partitioned():
    net = NextNet(out_channels=C, width=8, depth=3, max_k=3)
    k = jnp.array([1, -2])
    boxed = net.init(jax.random.key(0), jnp.zeros((2, 16, 16, 2 * C)), jnp.zeros((2,)), k)
    specs = nn.get_partition_spec(boxed)["params"]
    spec = jax.sharding.PartitionSpec
    assert specs["stem"]["Conv_0"]["kernel"] == spec(None, None, "embed", "mlp")
    assert specs["embed"]["frame_diff_embed"]["embedding"] == spec("vocab", "mlp")
    params = strip_boxes(boxed)
    apply = jax.jit(net.apply)
    for h, w in ((16, 16), (12, 21)):
        out = apply(params, jnp.ones((2, h, w, 2 * C)), jnp.zeros((2,)), k)
        assert out.shape == (2, h, w, C)
        np.testing.assert_array_equal(out, 0.0)  # zero-initialised output conv


# --------------------------------------------------------------------------------------------
# curriculum


def _pairs(step, num_frames=6, draws=2000, backward=True):
    fn = jax.jit(jax.vmap(lambda r: sf.sample_frame_pair(
        r, step, num_frames, max_k=3, stage_steps=10, backward=backward)))
    n, k = fn(jax.random.split(jax.random.key(0), draws))
    return np.asarray(n), np.asarray(k)


@pytest.mark.parametrize("step,expected", [
    (0, {1}), (9, {1}), (10, {-1, 1, 2}), (25, {-2, -1, 1, 2, 3}),
    (30, {-3, -2, -1, 1, 2, 3}), (10_000, {-3, -2, -1, 1, 2, 3}),
    (None, {-3, -2, -1, 1, 2, 3})])
def test_curriculum_k_and_frame_ranges(step, expected):
    n, k = _pairs(None if step is None else jnp.int32(step))
    assert set(k.tolist()) == expected
    assert np.all(k != 0) and np.all(np.abs(k) <= 3)
    assert np.all((n >= 0) & (n < 6) & (n + k >= 0) & (n + k < 6))
    if step is not None:
        assert int(sf.curriculum_max_k(jnp.int32(step), max_k=3, stage_steps=10)) == max(expected)


def test_curriculum_clipped_by_video_length_and_forward_only():
    n, k = _pairs(None, num_frames=3)
    assert set(k.tolist()) == {-2, -1, 1, 2}
    assert np.all((n + k >= 0) & (n + k < 3))
    _, k = _pairs(None, backward=False)
    assert set(k.tolist()) == {1, 2, 3}
    # every valid start frame is drawn for a given k
    n, k = _pairs(None)
    assert set(n[k == -2].tolist()) == {2, 3, 4, 5}


# --------------------------------------------------------------------------------------------
# role plumbing


def test_predictor_inputs_use_frame_n_and_target_n_plus_k():
    video = frame_index_video(3, 6)
    n, k = jnp.array([0, 4, 2]), jnp.array([1, -3, 2])
    inp = sf.predictor_inputs(video, n, k)
    np.testing.assert_allclose(inp.cond[:, 0, 0, 0], [0.0, 0.4, 0.2], atol=1e-6)
    np.testing.assert_allclose(inp.x0[:, 0, 0, 0], [0.1, 0.1, 0.4], atol=1e-6)
    np.testing.assert_array_equal(inp.frame_diff, k)
    assert inp.cond.shape == inp.x0.shape == (3, 4, 4, C)


def test_predictor_context_frames_step_back_by_k():
    """context_frames = 2: cond = [frame n ‖ frame n − k] (n − k is the frame before n in the
    direction of prediction, so backward k < 0 looks at n + |k|)."""
    video = frame_index_video(3, 8)
    n, k = jnp.array([2, 4, 5]), jnp.array([1, -3, 2])
    inp = sf.predictor_inputs(video, n, k, context=2)
    assert inp.cond.shape == (3, 4, 4, 2 * C)
    np.testing.assert_allclose(inp.cond[:, 0, 0, 0], [0.2, 0.4, 0.5], atol=1e-6)  # frame n
    np.testing.assert_allclose(inp.cond[:, 0, 0, C], [0.1, 0.7, 0.3], atol=1e-6)  # n − k
    np.testing.assert_allclose(inp.x0[:, 0, 0, 0], [0.3, 0.1, 0.7], atol=1e-6)


@pytest.mark.parametrize("context", [2, 3])
def test_frame_pairs_leave_room_for_every_context_frame(context):
    fn = jax.jit(jax.vmap(lambda r: sf.sample_frame_pair(
        r, None, 7, max_k=3, stage_steps=10, context=context)))
    n, k = (np.asarray(x) for x in fn(jax.random.split(jax.random.key(0), 4000)))
    assert set(np.abs(k).tolist()) == set(range(1, 6 // context + 1))  # c·|k| ≤ T − 1
    for j in range(context):  # every context frame n − j·k and the target are in the video
        assert np.all((n - j * k >= 0) & (n - j * k < 7))
    assert np.all((n + k >= 0) & (n + k < 7))
    # and every such start frame is drawn: k = 1, c = 2 → n ∈ [1, 5]
    assert set(n[k == 1].tolist()) == set(range(context - 1, 6))


def test_interpolator_and_projector_inputs():
    video = frame_index_video(2, 6)
    inp = sf.interpolator_inputs(video, jnp.array([0, 3]))
    assert inp.cond.shape == (2, 4, 4, 2 * C) and inp.frame_diff is None
    np.testing.assert_allclose(inp.cond[:, 0, 0, 0], [0.0, 0.3], atol=1e-6)  # frame n
    np.testing.assert_allclose(inp.cond[:, 0, 0, C], [0.2, 0.5], atol=1e-6)  # frame n + 2
    np.testing.assert_allclose(inp.x0[:, 0, 0, 0], [0.1, 0.4], atol=1e-6)  # frame n + 1
    proj = sf.projector_inputs(video, jnp.array([5, 2]))
    np.testing.assert_allclose(proj.x0[:, 0, 0, 0], [0.5, 0.2], atol=1e-6)
    assert proj.cond is None


def test_training_inputs_follow_step_and_stay_consistent():
    m = sf.SinFusionPredictor(tiny_config("predictor"))
    video = frame_index_video(64, 6)
    for step, kmax in ((jnp.int32(0), 1), (jnp.int32(1000), 3)):
        inp = m.training_inputs(video, jax.random.key(3), step)
        k = np.asarray(inp.frame_diff)
        assert np.abs(k).max() == kmax and np.all(k != 0)
        # target frame index = conditioning frame index + k
        np.testing.assert_allclose(inp.x0[:, 0, 0, 0] - inp.cond[:, 0, 0, 0], k / 10, atol=1e-6)
    inp = sf.SinFusionInterpolator(tiny_config("interpolator")).training_inputs(
        video, jax.random.key(0), None)
    np.testing.assert_allclose(inp.cond[..., C:] - inp.cond[..., :C], 0.2, atol=1e-6)
    np.testing.assert_allclose(inp.x0 - inp.cond[..., :C], 0.1, atol=1e-6)


@pytest.mark.parametrize("role,in_channels,param", [
    ("image", C, "x0"), ("projector", C, "x0"), ("predictor", 2 * C, "eps"),
    ("interpolator", 3 * C, "x0")])
def test_roles_init_and_loss(role, in_channels, param):
    m = sf.make_sinfusion(tiny_config(role))
    assert m.role == role and m.parameterization == param
    batch = m.example_batch(2)
    assert batch["video"].shape == (2, m.num_frames, 16, 16, C)
    params = strip_boxes(m.init(jax.random.key(0), batch))
    assert params["stem"]["Conv_0"]["kernel"].shape == (3, 3, in_channels, 8)
    assert ("frame_diff_embed" in params["embed"]) == (role == "predictor")
    loss, metrics = jax.jit(lambda p, b, r: m.loss(p, b, r, step=jnp.int32(0)))(
        params, batch, jax.random.key(1))
    assert np.isfinite(float(loss)) and "logsnr_mean" in metrics
    if role == "predictor":
        assert float(metrics["curriculum_max_k"]) == 1.0


def test_role_depth_sets_one_roles_network_depth():
    """sinfusion.role_depth: a shallow Predictor beside a paper-depth Projector in one
    workdir; each role's config (training, eval and sampling all use role_config) builds
    its own depth, and 0 falls back to model.depth."""
    c = tiny_config("predictor")
    c.sinfusion.role = "all"
    c.model.depth = 4
    c.sinfusion.role_depth.predictor = 2
    depths = {r: sf.role_config(c, r).model.depth for r in ("predictor", "projector",
                                                             "interpolator")}
    assert depths == {"predictor": 2, "projector": 4, "interpolator": 4}

    def blocks(role):
        m = sf.make_sinfusion(sf.role_config(c, role))
        params = strip_boxes(m.init(jax.random.key(0), m.example_batch(1)))
        return sum(name.startswith("block") for name in params)

    assert blocks("predictor") == 2 and blocks("projector") == 4


def test_predictor_training_lowers_loss():
    m = sf.SinFusionPredictor(tiny_config("predictor", num_frames=4))
    video = sf.synthetic_frames(1, 4, 16, 16, C)
    batch = {"video": jnp.broadcast_to(((video + 1) * 127.5).astype(jnp.uint8), (4, 4, 16, 16, C))}
    tx = optax.adam(3e-3)
    state = TrainState.create(params=strip_boxes(m.init(jax.random.key(0), batch)), tx=tx)
    step = jax.jit(lambda s, b, r: train_step(s, b, r, method=m, tx=tx,
                                              schedule=optax.constant_schedule(3e-3),
                                              ema_decay=0.9))
    eval_loss = jax.jit(lambda p: jnp.mean(jnp.stack([
        m.loss(p, batch, jax.random.key(100 + i))[0] for i in range(4)])))
    before = float(eval_loss(state.params))
    for _ in range(60):
        state, metrics = step(state, batch, jax.random.key(7))
    assert float(metrics["finite"]) == 1.0
    after = float(eval_loss(state.params))
    assert after < 0.8 * before, (before, after)



def test_residual_predictor_starts_as_copy_last_frame():
    """Zero-initialised output + residual: x̂0 is the conditioning frame at every level, so
    DDIM (η = 0) returns frame n exactly: training starts from the copy baseline."""
    c = tiny_config("predictor")
    c.diffusion.parameterization, c.sinfusion.residual = "x0", True
    m = sf.make_sinfusion(c)
    params = strip_boxes(m.init(jax.random.key(0), m.example_batch(1)))
    cond = sf.synthetic_frames(2, 1, 17, 17, C)[:, 0]
    out = apps.sample_frames(m, params, jax.random.key(1), cond.shape, cond=cond,
                             frame_diff=2, eta=0.0)
    np.testing.assert_allclose(np.asarray(out), np.clip(np.asarray(cond), -1, 1), atol=1e-5)
    c.diffusion.parameterization = "eps"
    with pytest.raises(ConfigError, match="residual"):
        sf.make_sinfusion(c)

def test_residual_predictor_with_two_context_frames_starts_as_copy_of_frame_n():
    c = tiny_config("predictor")
    c.diffusion.parameterization, c.sinfusion.residual = "x0", True
    c.sinfusion.context_frames = 2
    m = sf.make_sinfusion(c)
    batch = m.example_batch(1)
    params = strip_boxes(m.init(jax.random.key(0), batch))
    frames = sf.synthetic_frames(2, 2, 17, 17, C)  # [2, 2, H, W, C]: frames n and n − 1
    cond = jnp.concatenate([frames[:, 0], frames[:, 1]], axis=-1)
    out = apps.posterior_mean_frames(m, params, jax.random.key(1), frames[:, 0].shape,
                                     cond=cond, frame_diff=1)
    np.testing.assert_allclose(np.asarray(out), np.clip(np.asarray(frames[:, 0]), -1, 1),
                               atol=1e-5)
    c.data.num_frames = 2
    with pytest.raises(ConfigError, match="context_frames=2 needs data.num_frames ≥ 3"):
        sf.make_sinfusion(c)


def test_posterior_mean_is_the_x0_prediction_at_the_noisiest_level():
    """One call at λ(1): for x0-prediction the output is x̂0(z₁, λ(1)); a residual Predictor
    at initialisation gives the copy of frame n, whatever the noise draw."""
    c = tiny_config("predictor")
    c.diffusion.parameterization, c.sinfusion.residual = "x0", True
    m = sf.make_sinfusion(c)
    params = strip_boxes(m.init(jax.random.key(0), m.example_batch(1)))
    cond = sf.synthetic_frames(2, 1, 17, 17, C)[:, 0]
    a, b = (apps.posterior_mean_frames(m, params, jax.random.key(s), cond.shape, cond=cond,
                                       frame_diff=1) for s in (1, 2))
    np.testing.assert_allclose(np.asarray(a), np.clip(np.asarray(cond), -1, 1), atol=1e-5)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    # a generic network: exactly the denoiser's x̂0 at λ(1) for the same noise
    leaves, tree = jax.tree.flatten(params)
    params = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(jax.random.key(i), x.shape)
                                       for i, x in enumerate(leaves)])
    z = jax.random.normal(jax.random.key(3), cond.shape)
    ref = m.denoiser(params, cond=cond, frame_diff=1)(
        z, jnp.full((2,), m.schedule(jnp.float32(1.0))))
    got = apps.posterior_mean_frames(m, params, jax.random.key(3), cond.shape, cond=cond,
                                     frame_diff=1)
    np.testing.assert_allclose(np.asarray(got), np.clip(np.asarray(ref), -1, 1), atol=1e-5)

# --------------------------------------------------------------------------------------------
# applications (fake denoisers expose the plumbing exactly)


class ShiftPredictor(sf.SinFusionPredictor):
    """x̂0 = cond + k / 10: the sampled frame records the k it was asked for."""

    def denoiser(self, params, *, cond=None, frame_diff=None):
        k = jnp.asarray(frame_diff, jnp.float32)
        return lambda z, logsnr: jnp.broadcast_to(cond + k / 10.0, z.shape)


class ZeroProjector(sf.SinFusionProjector):
    def denoiser(self, params, *, cond=None, frame_diff=None):
        return lambda z, logsnr: jnp.zeros_like(z)


class MeanInterpolator(sf.SinFusionInterpolator):
    def denoiser(self, params, *, cond=None, frame_diff=None):
        return lambda z, logsnr: 0.5 * (cond[..., :C] + cond[..., C:])


@pytest.fixture(scope="module")
def fakes():
    return (ShiftPredictor(tiny_config("predictor")), ZeroProjector(tiny_config("projector")),
            MeanInterpolator(tiny_config("interpolator")))


def test_generate_video_length_k_and_correction(fakes):
    pred, proj, _ = fakes
    first = jnp.zeros((5, 7, C))
    video = apps.generate_video(pred, proj, None, None, jax.random.key(0), first, 5, k=2,
                                correction_level=0.0)
    assert video.shape == (5, 5, 7, C)
    np.testing.assert_allclose(video[:, 0, 0, 0], 0.2 * np.arange(5), atol=1e-5)
    corrected = apps.generate_video(pred, proj, None, None, jax.random.key(0), first + 0.5, 3,
                                    correction_level=0.3)
    np.testing.assert_allclose(corrected[0], 0.5)
    np.testing.assert_allclose(corrected[1:], 0.0, atol=1e-6)  # the Projector ran


def test_extrapolate_directions(fakes):
    pred, _, _ = fakes
    frame = jnp.full((4, 4, C), 0.5)
    fwd = apps.extrapolate(pred, None, None, None, jax.random.key(0), frame, 4, direction=1)
    back = apps.extrapolate(pred, None, None, None, jax.random.key(0), frame, 4, direction=-1)
    assert fwd.shape == back.shape == (4, 4, 4, C)
    np.testing.assert_allclose(fwd[:, 0, 0, 0], [0.5, 0.6, 0.7, 0.8], atol=1e-5)
    # backward: k = −1 at every step (each frame 0.1 below the next), real frame last
    np.testing.assert_allclose(back[:, 0, 0, 0], [0.2, 0.3, 0.4, 0.5], atol=1e-5)
    np.testing.assert_array_equal(back[-1], frame)


class VelocityPredictor(sf.SinFusionPredictor):
    """x̂0 = frame n + (frame n − frame n − k): constant velocity from two context frames."""

    def denoiser(self, params, *, cond=None, frame_diff=None):
        return lambda z, logsnr: jnp.broadcast_to(2 * cond[..., :C] - cond[..., C:], z.shape)


def test_rollouts_feed_back_their_own_last_frames_as_context():
    c = tiny_config("predictor")
    c.sinfusion.context_frames = 2
    pred = VelocityPredictor(c)
    frame = jnp.full((4, 4, C), 0.3)
    # the real frame before the start (0.2) sets the velocity, which the rollout keeps
    fwd = apps.extrapolate(pred, None, None, None, jax.random.key(0), frame, 4,
                           history=jnp.full((1, 4, 4, C), 0.2))
    np.testing.assert_allclose(fwd[:, 0, 0, 0], [0.3, 0.4, 0.5, 0.6], atol=1e-5)
    # backward: the history is the real frame after the start
    back = apps.extrapolate(pred, None, None, None, jax.random.key(0), frame, 3, direction=-1,
                            history=jnp.full((1, 4, 4, C), 0.5))
    np.testing.assert_allclose(back[:, 0, 0, 0], [-0.1, 0.1, 0.3], atol=1e-5)
    # no history: the first frame is repeated, i.e. no motion
    still = apps.generate_video(pred, None, None, None, jax.random.key(0), frame, 3)
    np.testing.assert_allclose(still, 0.3, atol=1e-6)
    with pytest.raises(ValueError, match="history has 2 frames"):
        apps.generate_video(pred, None, None, None, jax.random.key(0), frame, 3,
                            history=jnp.zeros((2, 4, 4, C)))


@pytest.mark.parametrize("factor", [2, 4])
def test_temporal_upsample_keeps_originals(fakes, factor):
    _, proj, interp = fakes
    video = frame_index_video(1, 4)[0]
    out = apps.temporal_upsample(interp, proj, None, None, jax.random.key(0), video, factor,
                                 correction_level=0.0)
    assert out.shape == ((4 - 1) * factor + 1, 4, 4, C)
    np.testing.assert_array_equal(out[::factor], video)
    np.testing.assert_allclose(out[:, 0, 0, 0], np.arange(out.shape[0]) / (10 * factor),
                               atol=1e-6)


def test_t_from_logsnr_inverts_schedule():
    m = sf.SinFusionImage(tiny_config("image"))
    for lam in (-5.0, 0.0, 3.0):
        t = apps.t_from_logsnr(m.schedule, lam)
        assert 0 < float(t) < 1
        np.testing.assert_allclose(m.schedule(t), lam, atol=1e-3)


def test_apps_with_real_networks_any_size():
    img = sf.SinFusionImage(tiny_config("image"))
    pred = sf.SinFusionPredictor(tiny_config("predictor"))
    proj = sf.SinFusionProjector(tiny_config("projector"))
    p_img = strip_boxes(img.init(jax.random.key(0), img.example_batch(1)))
    p_pred = strip_boxes(pred.init(jax.random.key(1), pred.example_batch(1)))
    p_proj = strip_boxes(proj.init(jax.random.key(2), proj.example_batch(1)))
    rng = jax.random.key(3)
    images = jax.jit(lambda p, r: apps.generate_images(img, p, r, 2, 12, 20))(p_img, rng)
    assert images.shape == (2, 12, 20, C) and np.all(np.isfinite(images))
    edited = jax.jit(lambda p, r, x: apps.edit_image(img, p, r, x, 2.0, level="logsnr"))(
        p_img, rng, images[0])
    assert edited.shape == (12, 20, C)
    video = jax.jit(lambda a, b, r, f: apps.generate_video(pred, proj, a, b, r, f, 3))(
        p_pred, p_proj, rng, images[0])
    assert video.shape == (3, 12, 20, C) and np.all(np.isfinite(video))
    np.testing.assert_array_equal(video[0], images[0])


def test_next_frame_evaluator_posterior_mean_of_a_fresh_residual_predictor_is_the_copy():
    """On the real video: a residual x0 Predictor at initialisation predicts frame n, so its
    posterior-mean PSNR equals the copy-last-frame baseline on the held-out frames."""
    ev, params, _ = _fresh_residual_predictor_evaluator(strides=(1,), max_pairs=4)
    out = ev(params, jax.random.key(1))
    assert out["next_frame_in_sample"] == 0.0 and out["next_frame_pairs_k1"] == 4
    np.testing.assert_allclose(out["next_frame_psnr_posterior_mean_k1"],
                               out["copy_last_frame_psnr_k1"], rtol=1e-4)


def test_next_frame_evaluator_validation_split_and_posterior_mean_only():
    """validation_frames = V: the first V held-out frames are scored under `val_` keys and
    the rest under the plain keys (the two sets of targets are disjoint); num_samples = 0
    reports the posterior mean without sampling."""
    from vdiff.eval.evaluators import SinFusionNextFrameEvaluator

    ev, params, config = _fresh_residual_predictor_evaluator(  # 8 training frames of 120
        strides=(1, 2), max_pairs=200, num_samples=0, validation_frames=4)
    val, _ = ev.pairs(2, "val")
    test, _ = ev.pairs(2, "test")
    np.testing.assert_array_equal(val, [8, 9, 10, 11])
    np.testing.assert_array_equal(test, np.arange(12, 120))
    out = ev(params, jax.random.key(1))
    assert not any(k.startswith(("next_frame_psnr_k", "val_next_frame_psnr_k")) for k in out)
    assert out["val_next_frame_pairs_k2"] == 4 and out["next_frame_pairs_k2"] == 108
    frames = ev.frames
    copy_val = np.mean([10 * np.log10(4 / np.mean((frames[j] - frames[j - 1]) ** 2))
                        for j in range(8, 12)])
    np.testing.assert_allclose(out["val_copy_last_frame_psnr_k1"], copy_val, rtol=1e-4)
    # a fresh residual Predictor predicts the copy on both splits
    for prefix in ("val_", ""):
        np.testing.assert_allclose(out[f"{prefix}next_frame_psnr_posterior_mean_k1"],
                                   out[f"{prefix}copy_last_frame_psnr_k1"], rtol=1e-4)
    # nothing predicted, nothing to shrink: α* = 0 and the shrunk Predictor is the copy
    assert out["shrinkage_alpha_k1"] == 0.0
    np.testing.assert_allclose(out["next_frame_psnr_shrunk_k1"], out["copy_last_frame_psnr_k1"],
                               rtol=1e-5)
    with pytest.raises(ConfigError, match="leaves no test frames"):
        SinFusionNextFrameEvaluator(config, ev.method, None, {**ev.s, "validation_frames": 112})


def _fresh_residual_predictor_evaluator(**settings):
    """The next-frame evaluator over a freshly initialised residual x0 Predictor of the
    runlocal video config (8 training frames of the shipped 120-frame video)."""
    import importlib.util
    import os

    from vdiff.eval.evaluators import SinFusionNextFrameEvaluator

    path = os.path.join(os.path.dirname(__file__), "..", "configs", "sinfusion_video.py")
    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("runlocal")
    config.diffusion.parameterization, config.sinfusion.residual = "x0", True
    config.sinfusion.context_frames = settings.pop("context_frames", 1)
    m = sf.make_sinfusion(sf.role_config(config, "predictor"))
    params = strip_boxes(m.init(jax.random.key(0), m.example_batch(1)))
    ev = SinFusionNextFrameEvaluator(config, m, None,
                                     {**SinFusionNextFrameEvaluator.DEFAULTS, **settings})
    return ev, params, config


def test_next_frame_evaluator_gives_a_two_frame_predictor_frames_n_and_n_minus_k():
    """context_frames = 2: the evaluator conditions on frames n and n − k of the video (a
    fresh residual Predictor's posterior mean is still the copy of frame n)."""
    ev, params, config = _fresh_residual_predictor_evaluator(
        strides=(1, 2), max_pairs=3, num_samples=0, context_frames=2)
    assert ev.method.context == 2
    out = ev(params, jax.random.key(1))
    for k in (1, 2):
        np.testing.assert_allclose(out[f"next_frame_psnr_posterior_mean_k{k}"],
                                   out[f"copy_last_frame_psnr_k{k}"], rtol=1e-4)


def test_shrinkage_is_fitted_on_validation_pairs_and_applied_to_test_pairs():
    """A Predictor that predicts twice the true change on the validation frames gets
    α* = ½; applied to a test prediction of three times the change it leaves half the change
    as error, 20·log10(2) ≈ 6.02 dB above copy-last-frame on every test pair."""
    ev, _, _ = _fresh_residual_predictor_evaluator(strides=(1,), max_pairs=200,
                                                   validation_frames=4)
    f = ev.frames

    def predicted(split, factor):
        t, _ = ev.pairs(1, split)
        return f[t - 1] + factor * (f[t] - f[t - 1])

    out = ev._shrunk(1, predicted("val", 2.0), predicted("test", 3.0))
    np.testing.assert_allclose(out["shrinkage_alpha_k1"], 0.5, rtol=1e-5)
    t, _ = ev.pairs(1, "test")
    copy = np.mean([10 * np.log10(4 / np.mean((f[j] - f[j - 1]) ** 2)) for j in t])
    np.testing.assert_allclose(out["next_frame_psnr_shrunk_k1"], copy + 20 * np.log10(2),
                               rtol=1e-4)
    # a Predictor whose change points away from the truth is shrunk to the copy
    out = ev._shrunk(1, predicted("val", -1.0), predicted("test", 3.0))
    assert out["shrinkage_alpha_k1"] == 0.0


def test_shrinkage_maximises_the_mean_psnr_not_the_pooled_squared_error():
    """Pair 1 moves a lot and its predicted change is half right; pair 2 barely moves and
    its prediction is 10× the wrong way. Pooled squared error wants the full change (the
    big pair dominates: α = 490/350 → 1); the mean PSNR is best with none of it."""
    from vdiff.eval.evaluators import best_shrinkage

    rng = np.random.default_rng(0)
    d = rng.normal(size=(2, 64))
    d[0] *= np.sqrt(1000 / np.sum(d[0] ** 2))
    d[1] *= np.sqrt(1 / np.sum(d[1] ** 2))
    r = np.stack([0.5 * d[0], -10 * d[1]])
    prev = np.zeros_like(d)
    assert np.sum(d * r) / np.sum(r * r) > 1  # the pooled fit, before clipping
    assert best_shrinkage(prev, d, r) == 0.0
    # per-pair optima agree: both at ½ (a 2× prediction on both pairs)
    assert best_shrinkage(prev, d, 2 * d) == 0.5


def test_sampler_names_map_to_ddim_eta():
    assert apps.eta_of_sampler("ddim", 0.7) == 0.0
    assert apps.eta_of_sampler("ancestral", 0.7) == 0.7
    with pytest.raises(ConfigError, match="SinFusion samples with the DDIM family"):
        apps.eta_of_sampler("dpmpp_2m", 1.0)
