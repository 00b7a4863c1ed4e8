"""Fused GroupNorm + FiLM + SiLU (vdiff.nn.fused_norm): the Pallas kernels, run in Pallas
interpret mode on the CPU, against the pure-JAX reference; dispatch, Triton lowering, the
config switch, and the UNet with the kernel on vs off."""

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdiff import runtime
from vdiff.errors import ConfigError
from vdiff.models.unet3d import UNet3D
from vdiff.nn import fused_norm as fn
from vdiff.nn.layers import FrameGroupNorm


def inputs(shape, groups, dtype, film=True, seed=0):
    """Random, never-zero inputs: x with per-channel offsets (|mean| ~ std), γ around 1."""
    k = jax.random.split(jax.random.key(seed), 7)
    c = shape[-1]
    x = 1.5 * jax.random.normal(k[0], shape) + jax.random.normal(k[1], (c,))
    gamma = 1.0 + 0.3 * jax.random.normal(k[2], (c,))
    beta = 0.3 * jax.random.normal(k[3], (c,))
    lead = shape[:-3] + (c,)
    scale = 0.3 * jax.random.normal(k[4], lead).astype(dtype) if film else None
    shift = 0.3 * jax.random.normal(k[5], lead).astype(dtype) if film else None
    dy = jax.random.normal(k[6], shape).astype(dtype)
    return x.astype(dtype), gamma, beta, scale, shift, dy


def value_and_grads(f, args, dy):
    """f(*args) and the gradient of <f, dy> w.r.t. every array argument, in one compile."""
    def run(*a):
        y, vjp = jax.vjp(f, *a)
        return y, vjp(dy)
    return jax.jit(run)(*args)


def assert_close(got, want, rel):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    scale = float(np.max(np.abs(want)))
    assert scale > 0
    np.testing.assert_allclose(got, want, rtol=rel, atol=rel * scale)


# (shape [B, F, H, W, C], groups, dtype, FiLM, tile elements): groups 1 / 8 / 32; channels
# per group 1 to 64, padded (6 → 8) or not; H·W a power of two or not (8×12); several row
# blocks with a masked tail (tile 256 over 96 rows); float32 and bfloat16.
CASES = [
    ((2, 2, 4, 4, 32), 32, jnp.float32, True, fn.DEFAULT_BLOCK_ELEMS),
    ((1, 2, 8, 12, 64), 8, jnp.float32, True, 256),
    ((1, 3, 4, 4, 64), 1, jnp.float32, False, fn.DEFAULT_BLOCK_ELEMS),
    ((2, 1, 4, 8, 192), 32, jnp.bfloat16, True, fn.DEFAULT_BLOCK_ELEMS),
    ((1, 2, 8, 12, 16), 8, jnp.bfloat16, False, 64),
]


@pytest.mark.parametrize("shape,groups,dtype,film,block", CASES)
def test_kernel_matches_reference(shape, groups, dtype, film, block):
    """Forward and gradients w.r.t. x, γ, β, FiLM scale and shift. float32: to ~1e-5 of the
    reference. bfloat16: to bf16 precision (1e-2) of the float32 maths on the same bf16
    inputs (the kernel rounds once, at the output; the bf16 reference rounds in between)."""
    x, gamma, beta, scale, shift, dy = inputs(shape, groups, dtype, film)
    args = (x, gamma, beta) + ((scale, shift) if film else ())

    def kernel(*a):
        return fn.group_norm_film_silu(*a, groups=groups, interpret=True, block_elems=block)

    def exact(*a):  # the reference in float32 on the same (rounded) inputs
        return fn.reference(*(v.astype(jnp.float32) for v in a), groups=groups)

    y, grads = value_and_grads(kernel, args, dy)
    y_ref, grads_ref = value_and_grads(exact, args, dy.astype(jnp.float32))
    assert y.dtype == dtype and y.shape == shape
    rel = 2e-5 if dtype == jnp.float32 else 1e-2
    assert_close(y, y_ref, rel)
    for name, g, g_ref, a in zip(["x", "gamma", "beta", "scale", "shift"], grads, grads_ref,
                                 args):
        assert g.dtype == a.dtype and g.shape == a.shape, name
        assert_close(g, g_ref, rel)
    if dtype == jnp.bfloat16:  # and the block's own bf16 arithmetic is as close
        assert_close(y, jax.jit(lambda *a: fn.reference(*a, groups=groups))(*args), 2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU (JAX_PLATFORMS=cuda)")
@pytest.mark.parametrize("shape,groups,dtype,film,block", CASES + [
    ((4, 16, 64, 64, 192), 32, jnp.bfloat16, False, fn.DEFAULT_BLOCK_ELEMS),
    ((4, 16, 8, 8, 1024), 32, jnp.bfloat16, False, fn.DEFAULT_BLOCK_ELEMS),
    ((4, 16, 32, 32, 128), 32, jnp.bfloat16, True, fn.DEFAULT_BLOCK_ELEMS)])
def test_compiled_kernel_on_gpu(shape, groups, dtype, film, block):
    """The Triton-compiled kernels (not interpret mode) against the float32 maths."""
    x, gamma, beta, scale, shift, dy = inputs(shape, groups, dtype, film)
    args = (x, gamma, beta) + ((scale, shift) if film else ())
    y, grads = value_and_grads(lambda *a: fn.group_norm_film_silu(
        *a, groups=groups, block_elems=block), args, dy)
    y_ref, grads_ref = value_and_grads(lambda *a: fn.reference(
        *(v.astype(jnp.float32) for v in a), groups=groups), args, dy.astype(jnp.float32))
    rel = 2e-5 if dtype == jnp.float32 else 1e-2
    assert_close(y, y_ref, rel)
    for g, g_ref in zip(grads, grads_ref):
        assert_close(g, g_ref, rel)


def test_reference_is_the_block():
    """`reference` is FrameGroupNorm + FiLM + SiLU as the unfused block computes them."""
    for dtype in (jnp.float32, jnp.bfloat16):
        x, gamma, beta, scale, shift, _ = inputs((2, 3, 4, 4, 16), 16, dtype)
        norm = FrameGroupNorm(dtype)
        params = {"params": {"GroupNorm_0": {"scale": gamma, "bias": beta}}}
        block = norm.apply(params, x, (scale, shift), silu=True)
        ref = fn.reference(x, gamma, beta, scale, shift, groups=16)
        assert block.dtype == ref.dtype == dtype
        np.testing.assert_allclose(np.asarray(block, np.float32), np.asarray(ref, np.float32),
                                   rtol=1e-6, atol=1e-6)


def test_supported_shapes():
    assert fn.supported((2, 16, 64, 64, 64), 32, jnp.bfloat16)
    assert fn.supported((2, 3, 8, 12, 192), 32)  # 6 channels per group: padded to 8
    assert fn.supported((4, 8, 8, 768), 32)
    assert not fn.supported((2, 4, 4, 48), 32)  # groups must divide C
    assert not fn.supported((4, 4, 8192), 1)  # a row of the tile would not fit
    assert not fn.supported((4, 8), 1)  # needs [..., H, W, C]
    assert not fn.supported((2, 4, 4, 8), 8, jnp.int32)
    with pytest.raises(ValueError, match="does not support"):
        fn.group_norm_film_silu(jnp.ones((2, 4, 4, 48)), jnp.ones(48), jnp.zeros(48), groups=32)


def test_dispatch(monkeypatch):
    """'on' off GPU and unsupported shapes run the reference; 'interpret' runs the kernel."""
    x, gamma, beta, scale, shift, _ = inputs((1, 2, 4, 4, 16), 8, jnp.float32)

    def jaxpr(impl):
        return str(jax.make_jaxpr(lambda *a: fn.fused(*a, groups=8, impl=impl))(
            x, gamma, beta, scale, shift))

    assert "pallas_call" in jaxpr("interpret")
    assert "pallas_call" not in jaxpr("off")
    if jax.default_backend() != "gpu":
        assert "pallas_call" not in jaxpr("on")
        np.testing.assert_array_equal(
            fn.fused(x, gamma, beta, scale, shift, groups=8, impl="on"),
            fn.reference(x, gamma, beta, scale, shift, groups=8))
    with monkeypatch.context() as m:  # as traced on one GPU, and under a multi-device mesh
        m.setattr(jax, "default_backend", lambda: "gpu")
        assert "pallas_call" in jaxpr("on")
        with jax.set_mesh(jax.make_mesh((jax.device_count(),), ("data",),
                                        axis_types=(jax.sharding.AxisType.Auto,))):
            assert ("pallas_call" in jaxpr("on")) == (jax.device_count() == 1)
    monkeypatch.setattr(fn, "MAX_PADDED_CHANNELS", 8)  # 16 channels: now unsupported
    assert "pallas_call" not in jaxpr("interpret")
    with pytest.raises(ValueError, match="impl"):
        jaxpr("triton")


def test_kernels_lower_to_triton():
    """Forward and backward lower to two Triton custom calls for CUDA (checked on the CPU:
    Pallas's Triton lowering runs in Python; only the PTX compile needs a GPU)."""
    pytest.importorskip("jax._src.pallas.triton.pallas_call_registration")
    from jax.export import DisabledSafetyCheck

    for shape, film, dtype in [((2, 3, 8, 12, 192), True, jnp.bfloat16),
                               ((2, 16, 64, 64, 64), False, jnp.float32)]:
        c = shape[-1]

        def f(x, g, b, s, t, film=film):
            y, vjp = jax.vjp(lambda *a: fn.group_norm_film_silu(*a, groups=32), x, g, b,
                             *((s, t) if film else ()))
            return y, vjp(y)

        spec = jax.ShapeDtypeStruct
        args = (spec(shape, dtype), spec((c,), jnp.float32), spec((c,), jnp.float32),
                spec(shape[:-3] + (c,), dtype), spec(shape[:-3] + (c,), dtype))
        exported = jax.export.export(
            jax.jit(f), platforms=["cuda"],
            disabled_checks=[DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(*args)
        assert exported.mlir_module().count("__gpu$xla.gpu.triton") == 2


def test_config_switch():
    assert runtime.fused_norm("off") == "off"
    assert runtime.fused_norm("auto", backend="gpu") == "off"  # until measured on a GPU
    assert runtime.fused_norm("on", backend="gpu") == "on"
    assert runtime.fused_norm("on", backend="cpu") == "off"
    assert runtime.fused_norm("on", backend="tpu") == "off"
    assert runtime.fused_norm("interpret", backend="cpu") == "interpret"
    with pytest.raises(ConfigError, match="fused_norm"):
        runtime.fused_norm("yes")
    from vdiff.config_lib import vdm_defaults
    from vdiff.methods.vdm import build_unet

    model = vdm_defaults().model
    assert model.fused_norm == "off"
    assert runtime.resolved_model_settings(model, backend="cpu")["model.fused_norm"] == "off"
    model.fused_norm = "on"
    assert runtime.resolved_model_settings(model, backend="cpu")["model.fused_norm"] == "on → off"
    model.fused_norm = "interpret"
    assert build_unet(model, out_channels=1).fused_norm == "interpret"


def test_unet_fused_on_equals_off():
    """Same parameter tree (names, shapes, values) with the kernel on or off, and the same
    output and parameter gradients (tiny float32 UNet; the kernel in interpret mode)."""
    # 3 ResBlocks (middle 2, up 1) and the output norm: 7 fused calls, each compiled twice
    # (forward and backward kernels) in interpret mode
    kw = dict(out_channels=2, base_channels=8, channel_mults=(1,), num_res_blocks=0,
              attn_resolutions=(), temporal_attn_resolutions=(), head_dim=8)
    off, on = UNet3D(**kw), UNet3D(**kw, fused_norm="interpret")
    z = jax.random.normal(jax.random.key(1), (1, 2, 4, 4, 2))
    logsnr = jnp.array([0.5])
    params = off.init(jax.random.key(0), z, logsnr)
    shapes_on = jax.eval_shape(lambda: on.init(jax.random.key(0), z, logsnr))
    assert jax.tree.structure(shapes_on) == jax.tree.structure(params)
    assert all(a.shape == b.shape and a.dtype == b.dtype
               for a, b in zip(jax.tree.leaves(shapes_on), jax.tree.leaves(params)))
    # the norms' initialisers are constants: the values match if the names and shapes do
    norms = {k: v for k, v in traverse_util.flatten_dict(params["params"]).items()
             if "GroupNorm_0" in k}
    assert norms and all(float(jnp.std(v)) == 0.0 for v in norms.values())
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape)
                                       for x, k in zip(leaves, keys)])

    def loss(model):
        return jax.jit(jax.value_and_grad(lambda p: jnp.mean(model.apply(p, z, logsnr) ** 2)))

    (l_off, g_off), (l_on, g_on) = loss(off)(params), loss(on)(params)
    np.testing.assert_allclose(l_on, l_off, rtol=1e-5)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g_off))
    for a, b in zip(jax.tree.leaves(g_on), jax.tree.leaves(g_off)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)
