"""Cascaded super-resolution: zero-initialised conditioning channels, training, sampling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tests.helpers import load_config, random_batch
from vdiff.methods import get_method
from vdiff.models.unet3d import UNet3D
from vdiff.train import sharding
from vdiff.train.setup import build_train_fns


def test_zero_conditioning_channels_leave_output_unchanged():
    """Adding conditioning channels with zero conv_in weights is a no-op (warm-start safe)."""
    model = UNet3D(out_channels=1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                   attn_resolutions=(), temporal_attn_resolutions=(4,), head_dim=8)
    z = jax.random.normal(jax.random.key(0), (2, 3, 8, 8, 1))
    cond = jax.random.normal(jax.random.key(1), (2, 3, 8, 8, 1))
    logsnr = jnp.array([0.0, 2.0])
    plain = sharding.strip_boxes(model.init(jax.random.key(2), z, logsnr))
    leaves, tree = jax.tree.flatten(plain)
    plain = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(jax.random.key(i), x.shape)
                                      for i, x in enumerate(leaves)])
    with_cond = jax.tree.map(lambda x: x, plain)
    kernel = plain["params"]["conv_in"]["Conv_0"]["kernel"]  # [3, 3, 1, C]
    with_cond["params"]["conv_in"]["Conv_0"]["kernel"] = jnp.concatenate(
        [kernel, jnp.zeros_like(kernel)], axis=2)
    a = model.apply(plain, z, logsnr)
    b = model.apply(with_cond, z, logsnr, cond=cond)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.max(np.abs(a)) > 1e-3  # a real (non-zero) network output


def test_cascade_conditioning_and_training_step():
    config = load_config("vdm_digits_sr", "runlocal")
    method = get_method(config)
    x0 = jnp.linspace(-1, 1, 2 * 4 * 16 * 16).reshape(2, 4, 16, 16, 1)
    cond = method.conditioning(x0, None)
    assert cond.shape == x0.shape
    # The conditioning is exactly the 2×2 block mean, repeated.
    np.testing.assert_allclose(cond[:, :, ::2, ::2], method.downsample(x0), atol=1e-6)
    np.testing.assert_allclose(cond[:, :, 1::2, 1::2], method.downsample(x0), atol=1e-6)
    mesh = sharding.make_mesh((-1, 1, 1))
    fns = build_train_fns(config, method, mesh)
    batch = random_batch(method, config.train.batch_size)
    with jax.set_mesh(mesh), nn.logical_axis_rules(fns.rules):
        state = fns.init(jax.random.key(0))
        kernel = state.params["conv_in"]["Conv_0"]["kernel"]
        assert kernel.shape[2] == 2  # noisy frame + low-resolution conditioning
        losses = []
        for _ in range(3):
            state, metrics = fns.step(state, fns.global_batch(batch), jax.random.key(1))
            losses.append(float(metrics["loss"]))
    assert all(np.isfinite(losses))
    out = jax.jit(lambda p, r, low: method.upsample(p, r, low, num_steps=3))(
        state.ema_params, jax.random.key(3), method.downsample(x0))
    assert out.shape == x0.shape and float(jnp.max(jnp.abs(out))) <= 1.0
