"""PVDM autoencoder and discriminators: latent shapes, triplane composition, remat, bf16, GAN."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vdiff.models.pvdm_autoencoder import PVDMAutoencoder
from vdiff.models.pvdm_discriminators import (PatchDiscriminator2D, PatchDiscriminator3D,
                                              hinge_d_loss, hinge_g_loss)
from vdiff.models.triplane import Triplane, compose_volume, plane_shapes

# Non-square frames so H′ = 4 and W′ = 6 cannot be confused.
B, S, H, W, PATCH, LATENT = 2, 4, 16, 24, 4, 4
TINY = dict(patch_size=PATCH, latent_channels=LATENT, width=32, encoder_depth=1,
            decoder_depth=1, projection_depth=1, head_dim=16)


MODEL = PVDMAutoencoder(**TINY)
# Compiled once per session and shared by the tests (compilation dominates their run time).
init = jax.jit(MODEL.init)
apply = jax.jit(MODEL.apply)
encode = jax.jit(functools.partial(MODEL.apply, method="encode"))
decode = jax.jit(functools.partial(MODEL.apply, method="decode"))


def _video(seed: int = 0, frames: int = S) -> jnp.ndarray:
    return jax.random.uniform(jax.random.key(seed), (B, frames, H, W, 3), minval=-1, maxval=1)


@pytest.fixture(scope="module")
def variables():
    params = init(jax.random.key(0), _video())
    # Attention output projections are zero-initialised, which would make the encoder's
    # planes independent of the video; perturb every parameter to test a generic network.
    leaves, tree = jax.tree.flatten(nn.meta.unbox(params))
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(
        tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_latent_shapes_and_range(variables):
    planes = encode(variables, _video())
    hp, wp = H // PATCH, W // PATCH
    assert planes.s.shape == (B, hp, wp, LATENT)
    assert planes.h.shape == (B, S, wp, LATENT)
    assert planes.w.shape == (B, S, hp, LATENT)
    expected = plane_shapes(num_frames=S, height=H, width=W, patch_size=PATCH, channels=LATENT)
    assert tuple(p.shape[1:] for p in planes) == tuple(expected)
    for p in planes:
        assert p.dtype == jnp.float32
        assert np.all(np.abs(np.asarray(p)) < 1.0)
        assert np.std(np.asarray(p)) > 1e-3  # not collapsed to a constant


def test_roundtrip_shape_and_call_equals_decode_encode(variables):
    x = _video(1)
    recon, planes = apply(variables, x)
    assert recon.shape == x.shape and recon.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(recon)))
    encoded = encode(variables, x)
    np.testing.assert_allclose(recon, decode(variables, encoded), rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 planes, encoded)


def test_compose_volume_known_values():
    """Voxel (t, i, j) of the composed volume is exactly [s_ij, h_tj, w_ti]."""
    hp, wp, c = 3, 5, 2
    s = jnp.arange(B * hp * wp * c, dtype=jnp.float32).reshape(B, hp, wp, c)
    h = 1000 + jnp.arange(B * S * wp * c, dtype=jnp.float32).reshape(B, S, wp, c)
    w = -1000 - jnp.arange(B * S * hp * c, dtype=jnp.float32).reshape(B, S, hp, c)
    vol = np.asarray(compose_volume(Triplane(s=s, h=h, w=w)))
    assert vol.shape == (B, S, hp, wp, 3 * c)
    for b in range(B):
        for t in range(S):
            for i in range(hp):
                for j in range(wp):
                    expected = np.concatenate([s[b, i, j], h[b, t, j], w[b, t, i]])
                    np.testing.assert_array_equal(vol[b, t, i, j], expected)


def test_decoder_depends_on_every_plane(variables):
    planes = encode(variables, _video(2))
    grads = jax.jit(jax.grad(lambda z: jnp.sum(decode(variables, z) ** 2)))(planes)
    for name, g in zip(Triplane._fields, grads):
        assert np.all(np.isfinite(np.asarray(g))), name
        assert float(jnp.abs(g).max()) > 0, f"decoder ignores plane {name}"


def test_encoder_structure(variables):
    """Batch examples are independent; z^s summarises every frame of its own clip."""
    x = _video(3)
    base = encode(variables, x)
    other = encode(variables, x.at[1].set(_video(4)[1]))
    for a, b in zip(base, other):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6)
        assert float(jnp.abs(a[1] - b[1]).max()) > 1e-4
    grad = jax.jit(jax.grad(lambda x: jnp.sum(encode(variables, x).s[0])))(x)
    per_frame = np.abs(np.asarray(grad[0])).sum(axis=(1, 2, 3))
    assert np.all(per_frame > 0), per_frame
    np.testing.assert_array_equal(np.asarray(grad[1]), 0.0)


def test_fresh_encoder_depends_on_video():
    """Zero-initialised attention outputs notwithstanding, fresh planes see the video."""
    params = init(jax.random.key(0), _video())
    a, b = encode(params, _video(0)), encode(params, _video(1))
    for name, x, y in zip(Triplane._fields, a, b):
        assert float(jnp.abs(x - y).max()) > 1e-3, name


def test_remat_matches(variables):
    x = _video(5)

    def value_and_grad(model):
        def loss(v):
            recon, planes = model.apply(v, x)
            return jnp.mean(recon ** 2) + sum(jnp.mean(p ** 3) for p in planes)
        return jax.jit(jax.value_and_grad(loss))(variables)

    (value, grads) = value_and_grad(MODEL)
    (value_r, grads_r) = value_and_grad(PVDMAutoencoder(**TINY, remat=True))
    np.testing.assert_allclose(value, value_r, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 grads, grads_r)


def test_bfloat16_compute(variables):
    bf16 = PVDMAutoencoder(**TINY, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(bf16.init, jax.random.key(0), _video())
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nn.meta.unbox(shapes)))
    x = _video(6)
    recon, planes = apply(variables, x)
    recon16, planes16 = jax.jit(bf16.apply)(variables, x)
    assert recon16.dtype == jnp.float32 and all(p.dtype == jnp.float32 for p in planes16)
    scale = float(jnp.abs(recon).max())
    np.testing.assert_allclose(recon16, recon, atol=0.1 * scale)
    for a, b in zip(planes16, planes):
        np.testing.assert_allclose(a, b, atol=0.1)


def test_kernels_carry_logical_axes():
    shapes = jax.eval_shape(PVDMAutoencoder(**TINY).init, jax.random.key(0), _video())
    leaves = jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    kernels = [x for x in leaves if isinstance(x, nn.Partitioned)]
    plain = [x for x in leaves if not isinstance(x, nn.Partitioned)]
    assert kernels and all(len(k.names) == k.value.ndim for k in kernels)
    assert all(x.ndim == 1 for x in plain), "every ≥2-D parameter needs logical axis names"


def test_indivisible_frames_raise():
    model = PVDMAutoencoder(**TINY)
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, S, 16, 18, 3)))


# --- discriminators -------------------------------------------------------------------

DISC_HW = 16


@pytest.mark.parametrize("frames", [4, 8])
@pytest.mark.parametrize("num_layers", [2, 3])
def test_discriminator_shapes(frames, num_layers):
    video = jnp.zeros((B, frames, DISC_HW, DISC_HW, 3))
    side = DISC_HW // 2 ** num_layers
    d2 = PatchDiscriminator2D(base_channels=8, num_layers=num_layers)
    out2 = jax.eval_shape(lambda v: d2.init_with_output(jax.random.key(0), v)[0], video)
    assert out2.shape == (B, frames, side, side) and out2.dtype == jnp.float32
    d3 = PatchDiscriminator3D(base_channels=8, num_layers=num_layers)
    out3 = jax.eval_shape(lambda v: d3.init_with_output(jax.random.key(0), v)[0], video)
    assert out3.shape == (B, max(frames // 2 ** num_layers, 1), side, side)


def test_discriminator_runs_on_short_clip():
    video = jnp.zeros((1, 1, DISC_HW, DISC_HW, 3))
    disc = PatchDiscriminator3D(base_channels=8)
    out, _ = jax.jit(disc.init_with_output)(jax.random.key(0), video)
    assert out.shape == (1, 1, 2, 2) and np.all(np.isfinite(np.asarray(out)))


def test_hinge_losses_known_values():
    real, fake = jnp.array([2.0, 0.5]), jnp.array([-2.0, 0.0])
    np.testing.assert_allclose(hinge_d_loss(real, fake), 0.25 + 0.5, rtol=1e-6)
    np.testing.assert_allclose(hinge_g_loss(fake), 1.0, rtol=1e-6)
    np.testing.assert_allclose(hinge_d_loss(jnp.full((3, 4), 1.5), jnp.full((3, 4), -1.5)), 0.0)


@pytest.mark.parametrize("disc_cls", [PatchDiscriminator2D, PatchDiscriminator3D])
def test_discriminator_learns_real_vs_noise(disc_cls):
    """A few Adam steps separate smooth 'real' clips from white-noise 'fakes'."""
    frames = 4
    yy, xx = jnp.meshgrid(jnp.linspace(0, 1, DISC_HW), jnp.linspace(0, 1, DISC_HW),
                          indexing="ij")
    phase = jax.random.uniform(jax.random.key(0), (B, frames, 1, 1, 3), maxval=6.28)
    real = jnp.sin(2 * jnp.pi * (yy + xx)[None, None, :, :, None] + phase)
    fake = jax.random.uniform(jax.random.key(1), real.shape, minval=-1, maxval=1)
    disc = disc_cls(base_channels=8, num_layers=2)
    params = disc.init(jax.random.key(2), real)
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    def loss_fn(p):
        return hinge_d_loss(disc.apply(p, real), disc.apply(p, fake))

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(loss_fn)(p)
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    losses = []
    for _ in range(16):  # losses[k] is measured before update k
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.2, losses
