"""TriplaneUNet: shapes on odd planes, weight sharing, joint attention, zero-init, cond.

Compilation dominates on CPU, so every test reuses one of a handful of jitted applies
(model × plane shapes); shape-only and error checks go through jax.eval_shape.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdiff.models.pvdm_unet import TriplaneAttention, TriplaneUNet, axis_position_features
from vdiff.models.triplane import Triplane

B, C, C_COND = 2, 3, 2
SQUARE = (6, 6, 6)  # S, H′, W′: s, h, w all 6×6, so three identical planes are possible
ODD = (5, 6, 7)  # sides 5 and 7 are odd before the downsample: exercises the crop

MODEL = TriplaneUNet(out_channels=C, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                     attn_levels=(0, 1), head_dim=8)
NO_ATTN = MODEL.clone(attn_levels=(), middle_attention=False)
POS = MODEL.clone(axis_positions=True)  # same parameters: the features are fixed


def planes(shape: tuple[int, int, int], channels: int, seed: int) -> Triplane:
    s, hp, wp = shape
    k = jax.random.split(jax.random.key(seed), 3)
    return Triplane(jax.random.normal(k[0], (B, hp, wp, channels)),
                    jax.random.normal(k[1], (B, s, wp, channels)),
                    jax.random.normal(k[2], (B, s, hp, channels)))


@functools.cache
def jitted_apply(model: TriplaneUNet):
    return jax.jit(lambda p, z, logsnr, cond: model.apply(p, z, logsnr, cond=cond))


def perturb(params, seed: int, keep=lambda path: False):
    """Adds noise to every parameter whose path `keep` rejects (zero-inits become generic)."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    keys = iter(jax.random.split(jax.random.key(seed), len(leaves)))

    def f(path, x):
        k = next(keys)
        return x if keep(jax.tree_util.keystr(path)) else x + 0.1 * jax.random.normal(k, x.shape)
    return jax.tree_util.tree_map_with_path(f, params)


def drop_attention(params):
    """NO_ATTN's params: MODEL's without the attention layers (names are explicit)."""
    return {"params": {k: v for k, v in params["params"].items() if "attn" not in k}}


@pytest.fixture(scope="module")
def init_params():
    z, cond = planes(SQUARE, C, 0), planes(SQUARE, C_COND, 1)
    params = jax.jit(lambda r: MODEL.init(r, z, jnp.zeros((B,)), cond=cond))(jax.random.key(0))
    return nn.meta.unbox(params)


@pytest.fixture(scope="module")
def params(init_params):
    return perturb(init_params, 1)


LOGSNR = jnp.array([-1.0, 2.0])


def test_output_shapes(params):
    apply = jitted_apply(MODEL)
    for shape, seed in [(SQUARE, 2), (ODD, 3)]:
        z = planes(shape, C, seed)
        out = apply(params, z, LOGSNR, planes(shape, C_COND, seed + 10))
        assert [o.shape for o in out] == [p.shape for p in z]
        assert all(o.dtype == jnp.float32 and np.all(np.isfinite(o)) for o in out)


@pytest.mark.parametrize("model, shape", [
    (MODEL, (4, 8, 8)),
    (MODEL.clone(channel_mults=(1, 2, 2)), (6, 8, 10)),  # 6→3→2, 10→5→3: cropped on the way up
    (MODEL.clone(channel_mults=(1, 1, 2, 2)), (16, 32, 32)),  # PVDM's layout: h, w end at 2×4
    (MODEL.clone(channel_mults=(1, 1, 2, 2)), (10, 9, 7)),
])
def test_output_shapes_any_size(model, shape):
    z, cond = planes(shape, C, 0), planes(shape, C_COND, 1)

    out, _ = jax.eval_shape(lambda r: model.init_with_output(r, z, LOGSNR, cond=cond),
                            jax.random.key(0))
    assert [o.shape for o in out] == [p.shape for p in z]


def test_param_tree_independent_of_plane_shapes():
    def tree(shape):
        z, cond = planes(shape, C, 0), planes(shape, C_COND, 1)
        v = jax.eval_shape(lambda r: MODEL.init(r, z, LOGSNR, cond=cond), jax.random.key(0))
        return jax.tree.map(lambda x: x.shape, nn.meta.unbox(v))
    a, b = tree((4, 8, 8)), tree(ODD)
    assert a == b
    # One ResBlock per UNet slot (down 2 + middle 2 + up 2×2), not one per plane.
    res = [k for k in a["params"] if "_res_" in k]
    assert len(res) == 8 and all(list(a["params"][k]) == ["ResBlock_0"] for k in res)
    # z, cond and the three one-hot plane-identity channels
    assert a["params"]["conv_in"]["Conv_0"]["kernel"] == (3, 3, C + C_COND + 3, 16)
    # The only plane-indexed parameters are the plane embeddings.
    is_shape = lambda x: isinstance(x, tuple)  # noqa: E731
    for path, shape in jax.tree_util.tree_flatten_with_path(a, is_leaf=is_shape)[0]:
        if shape[:1] == (3,) and len(shape) == 2:
            assert "plane_embed" in jax.tree_util.keystr(path), path


def test_identical_planes_give_identical_outputs_without_plane_inputs():
    """Shared weights + symmetric attention: s = h = w in → s = h = w out (plane embed 0,
    no coordinate features, no plane-identity inputs)."""
    sym = MODEL.clone(plane_inputs=False)
    one, c = planes(SQUARE, C, 4).s, planes(SQUARE, C_COND, 5).s
    z, cond = Triplane(one, one, one), Triplane(c, c, c)
    p = nn.meta.unbox(jax.jit(lambda r: sym.init(r, z, LOGSNR, cond=cond))(jax.random.key(1)))
    p = perturb(p, 2, keep=lambda path: "plane_embed" in path)
    apply = jitted_apply(sym)
    out = apply(p, z, LOGSNR, cond)
    assert np.max(np.abs(out.s)) > 1e-2
    np.testing.assert_allclose(out.h, out.s, atol=1e-5)
    np.testing.assert_allclose(out.w, out.s, atol=1e-5)
    # Control: the plane embedding is what lets attention tell the planes apart.
    p2 = perturb(p, 3, keep=lambda path: "plane_embed" not in path)
    out2 = apply(p2, z, LOGSNR, cond)
    assert np.max(np.abs(out2.h - out2.s)) > 1e-3


def test_plane_inputs_let_the_convolutions_tell_planes_apart(params):
    """With the plane-identity channels (the default) identical planes give different
    outputs through the convolutions alone: no attention layer, no plane embedding."""
    one, c = planes(SQUARE, C, 4).s, planes(SQUARE, C_COND, 5).s
    out = jitted_apply(NO_ATTN)(drop_attention(params), Triplane(one, one, one), LOGSNR,
                                Triplane(c, c, c))
    assert np.max(np.abs(out.h - out.s)) > 1e-2
    assert np.max(np.abs(out.w - out.h)) > 1e-2


def test_axis_features_are_shared_by_the_tokens_of_one_clip_coordinate():
    """z^s(i, j) and z^h(t, j) carry the same width features, z^s(i, j) and z^w(t, i) the
    same height features; each plane is zero in the group of the axis it lacks."""
    s, h, w, c = 5, 6, 7, 13  # C // 3 = 4 channels per axis, channel 12 unused
    f = axis_position_features(Triplane(jnp.zeros((1, h, w, c)), jnp.zeros((1, s, w, c)),
                                        jnp.zeros((1, s, h, c))))
    assert [x.shape for x in f] == [(1, h, w, c), (1, s, w, c), (1, s, h, c)]
    H, W, T = slice(0, 4), slice(4, 8), slice(8, 12)
    fs, fh, fw = (np.asarray(x[0]) for x in f)
    for i, j, t in [(0, 0, 0), (2, 5, 3), (5, 6, 4)]:
        np.testing.assert_allclose(fs[i, j, W], fh[t, j, W])
        np.testing.assert_allclose(fs[i, j, H], fw[t, i, H])
        np.testing.assert_allclose(fh[t, j, T], fw[t, i, T])
    np.testing.assert_array_equal(fs[..., T], 0)
    np.testing.assert_array_equal(fh[..., H], 0)
    np.testing.assert_array_equal(fw[..., W], 0)
    for x in (fs, fh, fw):
        np.testing.assert_array_equal(x[..., 12], 0)
    # every position of a plane is distinguishable
    assert len({tuple(np.round(v, 5)) for v in fs.reshape(-1, c)}) == h * w
    assert len({tuple(np.round(v, 5)) for v in fh.reshape(-1, c)}) == s * w


def test_axis_features_change_the_output_of_a_trained_attention(params):
    z, cond = planes(SQUARE, C, 10), planes(SQUARE, C_COND, 11)
    with_pos = jitted_apply(POS)(params, z, LOGSNR, cond)
    without = jitted_apply(MODEL)(params, z, LOGSNR, cond)
    assert np.max(np.abs(with_pos.s - without.s)) > 1e-3
    odd = jitted_apply(POS)(params, planes(ODD, C, 12), LOGSNR, planes(ODD, C_COND, 13))
    assert [o.shape[1:3] for o in odd] == [(6, 7), (5, 7), (5, 6)]  # cropped levels align
    no_attn_params = drop_attention(params)  # without attention they cannot matter
    a = jitted_apply(NO_ATTN)(no_attn_params, z, LOGSNR, cond)
    b = jitted_apply(NO_ATTN.clone(axis_positions=True))(no_attn_params, z, LOGSNR, cond)
    np.testing.assert_array_equal(a.s, b.s)


def test_attention_mixes_planes_and_convolutions_do_not(params):
    z, cond = planes(ODD, C, 6), planes(ODD, C_COND, 7)
    z2 = z._replace(h=z.h + 1.0)  # only plane h changes
    with_attn = jitted_apply(MODEL)
    base, out = with_attn(params, z, LOGSNR, cond), with_attn(params, z2, LOGSNR, cond)
    assert np.max(np.abs(out.s - base.s)) > 1e-3
    assert np.max(np.abs(out.w - base.w)) > 1e-3

    no_attn = jitted_apply(NO_ATTN)
    p = drop_attention(params)
    base, out = no_attn(p, z, LOGSNR, cond), no_attn(p, z2, LOGSNR, cond)
    np.testing.assert_array_equal(out.s, base.s)
    np.testing.assert_array_equal(out.w, base.w)
    assert np.max(np.abs(out.h - base.h)) > 1e-3


def test_zero_init_output(init_params):
    out = jitted_apply(MODEL)(init_params, planes(SQUARE, C, 8), LOGSNR, planes(SQUARE, C_COND, 9))
    for o in out:
        np.testing.assert_array_equal(o, 0.0)


def test_fresh_attention_is_identity(init_params):
    x = planes(ODD, 16, 10)
    layer = TriplaneAttention(head_dim=8)
    out, _ = jax.jit(layer.init_with_output)(jax.random.key(0), x)
    for a, b in zip(out, x):
        np.testing.assert_array_equal(a, b)
    # Whole network: fresh attention layers, everything else generic ≡ no attention at all.
    p = perturb(init_params, 4, keep=lambda path: "attn" in path)
    z, cond = planes(ODD, C, 11), planes(ODD, C_COND, 12)
    out = jitted_apply(MODEL)(p, z, LOGSNR, cond)
    ref = jitted_apply(NO_ATTN)(drop_attention(p), z, LOGSNR, cond)
    assert np.max(np.abs(ref.s)) > 1e-2
    for a, b in zip(out, ref):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_cond(params):
    apply = jitted_apply(MODEL)
    z = planes(SQUARE, C, 13)
    zeros = Triplane(*(jnp.zeros(p.shape[:3] + (C_COND,)) for p in z))
    out0 = apply(params, z, LOGSNR, zeros)
    out1 = apply(params, z, LOGSNR, planes(SQUARE, C_COND, 14))
    assert [o.shape for o in out0] == [p.shape for p in z]
    assert np.max(np.abs(out1.s - out0.s)) > 1e-3
    with pytest.raises(ValueError, match="initialised with cond"):
        apply(params, z, LOGSNR, None)
    with pytest.raises(ValueError, match="conv_in"):
        apply(params, z, LOGSNR, planes(SQUARE, C_COND + 1, 14))
    with pytest.raises(ValueError, match="cond plane s"):  # a consistent cond of another clip size
        apply(params, z, LOGSNR, planes(ODD, C_COND, 14))
    with pytest.raises(ValueError, match="cond planes are not the projections"):
        apply(params, z, LOGSNR, zeros._replace(h=jnp.zeros((B, 5, 6, C_COND))))


def _bad(z: Triplane, **changes) -> Triplane:
    return z._replace(**{k: v(getattr(z, k)) for k, v in changes.items()})


@pytest.mark.parametrize("make, match", [
    (lambda z: _bad(z, h=lambda x: x[:1]), "batch sizes"),
    (lambda z: _bad(z, w=lambda x: x[..., :1]), "channel counts"),
    (lambda z: _bad(z, s=lambda x: x[:, :3]), "projections of one clip"),
    (lambda z: Triplane(z.s, z.w, z.h), "projections of one clip"),  # h and w swapped
    (lambda z: _bad(z, s=lambda x: x[:, None]), r"\[B, H, W, C\]"),
    (lambda z: (z.s, z.h, z.w), "must be a Triplane"),
])
def test_invalid_planes(make, match):
    z = planes(ODD, C, 0)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(lambda r: MODEL.init(r, make(z), LOGSNR), jax.random.key(0))


def test_invalid_logsnr_and_attn_levels():
    z = planes(ODD, C, 0)
    with pytest.raises(ValueError, match="logsnr"):
        jax.eval_shape(lambda r: MODEL.init(r, z, jnp.zeros((B, 1))), jax.random.key(0))
    with pytest.raises(ValueError, match="attn_levels"):
        jax.eval_shape(lambda r: MODEL.clone(attn_levels=(2,)).init(r, z, LOGSNR),
                       jax.random.key(0))


def test_remat_same_params_and_static_train():
    """remat must not rename parameters (checkpoints stay interchangeable) and must keep
    `train` static (dropout branches on it in Python)."""
    z, cond = planes(ODD, C, 0), planes(ODD, C_COND, 1)
    plain = MODEL.clone(channel_mults=(1,), attn_levels=(0,))
    model = plain.clone(remat=True, dropout=0.1)
    init = lambda m: jax.eval_shape(lambda r: m.init(r, z, LOGSNR, cond=cond), jax.random.key(0))
    v = init(model)
    assert jax.tree.map(lambda x: x.shape, v) == jax.tree.map(lambda x: x.shape, init(plain))

    def loss(p):
        out = model.apply(p, z, LOGSNR, cond=cond, train=True,
                          rngs={"dropout": jax.random.key(1)})
        return sum(jnp.sum(o) for o in out)
    grads = jax.eval_shape(jax.grad(loss), v)
    assert jax.tree.structure(grads) == jax.tree.structure(v)


def test_bfloat16(params):
    z, cond = planes(SQUARE, C, 15), planes(SQUARE, C_COND, 16)
    ref = jitted_apply(MODEL)(params, z, LOGSNR, cond)
    out = jitted_apply(MODEL.clone(dtype=jnp.bfloat16))(params, z, LOGSNR, cond)
    for o, r in zip(out, ref):
        assert o.dtype == jnp.float32 and o.shape == r.shape and np.all(np.isfinite(o))
        assert np.linalg.norm(o - r) < 0.1 * np.linalg.norm(r)
