"""One train_step on 1 device, data-parallel and FSDP meshes gives the same result."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from tests.helpers import load_config, random_batch
from vdiff.errors import ConfigError
from vdiff.methods import get_method
from vdiff.train import sharding, trainer
from vdiff.train.setup import build_train_fns


def test_resolve_mesh_shape():
    assert sharding.resolve_mesh_shape((-1, 1, 1), 8) == (8, 1, 1)
    assert sharding.resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
    with pytest.raises(ConfigError, match="at most one"):
        sharding.resolve_mesh_shape((-1, -1, 1), 8)
    with pytest.raises(ConfigError, match="uses 4 devices"):
        sharding.resolve_mesh_shape((2, 2, 1), 8)
    with pytest.raises(ConfigError, match="cannot fill"):
        sharding.resolve_mesh_shape((3, -1, 1), 8)


def _run(config, method, batch, mesh_shape, devices=None, steps=2):
    mesh = sharding.make_mesh(mesh_shape, devices)
    fns = build_train_fns(config, method, mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(fns.rules):
        state = fns.init(jax.random.key(0))
        losses = []
        for _ in range(steps):
            state, metrics = fns.step(state, fns.global_batch(batch), jax.random.key(1))
            losses.append(float(metrics["loss"]))
    assert fns.step._cache_size() == 1, "the train step must compile once, not per step"
    return state, losses


@pytest.fixture(scope="module")
def setup():
    config = load_config("vdm_digits", "runlocal")
    method = get_method(config)
    batch = random_batch(method, config.train.batch_size)
    ref_state, ref_losses = _run(config, method, batch, (1, 1, 1), jax.devices()[:1])
    return config, method, batch, jax.device_get(ref_state.params), ref_losses


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (1, 8, 1)], ids=["data", "fsdp"])
def test_sharded_matches_single_device(setup, mesh_shape):
    config, method, batch, ref_params, ref_losses = setup
    state, losses = _run(config, method, batch, mesh_shape)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(ref_params), jax.tree.leaves(jax.device_get(state.params))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    params, opt = jax.tree.leaves(state.params), jax.tree.leaves(state.opt_state)
    if mesh_shape[1] == 8:  # FSDP must actually shard parameters and optimizer state
        assert any(not x.sharding.is_fully_replicated for x in params)
        assert any(not x.sharding.is_fully_replicated for x in opt)
    else:  # pure data parallel replicates them
        assert all(x.sharding.is_fully_replicated for x in params)


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_rbg_prng_trains_on_a_sharded_mesh(setup, impl):
    """`train.prng_impl` selects the root key's PRNG (threefry by default); RngBitGenerator
    keys drive the sharded train step with finite losses and numbers different from
    threefry's; an unknown name is a ConfigError."""
    from vdiff import config_lib

    config, method, batch, _, ref_losses = setup
    assert str(jax.random.key_impl(config_lib.root_key(config))) == "threefry2x32"
    rbg_config = config.copy_and_resolve_references()
    rbg_config.train.prng_impl = impl
    root = config_lib.root_key(rbg_config)
    assert str(jax.random.key_impl(root)) == impl
    mesh = sharding.make_mesh((8, 1, 1))
    fns = build_train_fns(config, method, mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(fns.rules):
        state = fns.init(jax.random.key(0))
        losses = []
        for i in range(3):
            state, metrics = fns.step(state, fns.global_batch(batch), jax.random.fold_in(root, i))
            losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses)) and losses[0] != ref_losses[0]
    rbg_config.train.prng_impl = "philox"
    with pytest.raises(ConfigError, match="prng_impl"):
        config_lib.root_key(rbg_config)


def test_batch_must_divide_data_parallel_size(tmp_path):
    config = load_config("vdm_digits", "runlocal")
    config.train.batch_size = 4
    config.mesh.shape = (8, 1, 1)
    with pytest.raises(ConfigError, match="divisible by the data-parallel mesh size"):
        trainer.train_and_evaluate(config, str(tmp_path))
