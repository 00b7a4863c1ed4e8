"""Sharded state and the jitted train step for one config on one mesh.

Kept apart from the loop so benchmarks, tests and notebooks can build exactly
what the trainer runs without touching data or checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from vdiff.errors import ConfigError
from vdiff.train import sharding
from vdiff.train.checkpoint import abstract_like
from vdiff.train.state import TrainState, make_optimizer
from vdiff.train.train_step import make_train_step


@dataclasses.dataclass
class TrainFns:
    """The compiled-once pieces of a run on one mesh (shared by the loop and tests)."""

    mesh: Any
    rules: Any
    init: Any  # rng -> TrainState, already sharded
    step: Any  # jitted (state, batch, rng) -> (state, metrics), state donated
    state_shardings: Any
    abstract_state: Any  # ShapeDtypeStructs with target shardings (for restore)
    batch_shardings: dict[str, Any]
    from_params: Any  # jitted params -> fresh TrainState (optimizer state from scratch)

    def global_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return sharding.global_batch(local_batch, self.mesh)


def build_train_fns(config: Any, method: Any, mesh: Any) -> TrainFns:
    """Creates state shardings from logical axis rules (eval_shape → shardings → jitted init)."""
    rules = sharding.rules_from_config(config.sharding.logical_axis_rules)
    # A method with several parameter groups (PVDM: autoencoder + discriminators, or a
    # frozen autoencoder) builds its own optax transform; the rest use `train`'s optimizer.
    own = method.optimizer(config.train)
    tx, schedule = make_optimizer(config.train) if own is None else own
    example = method.example_batch(1)

    def boxed_init(rng):
        return TrainState.create(params=method.init(rng, example), tx=tx)

    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        abstract_boxed = jax.eval_shape(boxed_init, jax.random.key(0))
        state_shardings = sharding.logical_shardings(abstract_boxed, mesh, rules)
    init_fn = jax.jit(lambda rng: sharding.strip_boxes(boxed_init(rng)),
                      out_shardings=state_shardings)
    abstract_state = abstract_like(sharding.strip_boxes(abstract_boxed), state_shardings)
    local = method.example_batch(max(config.train.batch_size // jax.process_count(), 1))
    batch_shardings = {k: sharding.batch_sharding(mesh, v.ndim) for k, v in local.items()}
    step = make_train_step(method=method, tx=tx, schedule=schedule,
                           ema_decay=config.train.ema_decay, state_shardings=state_shardings,
                           batch_shardings=batch_shardings, replicated=sharding.replicated(mesh))
    from_params = jax.jit(lambda params: TrainState.create(params=params, tx=tx),
                          out_shardings=state_shardings)
    return TrainFns(mesh, rules, init_fn, step, state_shardings, abstract_state, batch_shardings,
                    from_params)


def _overlay(params: Any, base: dict[str, Any], shardings: Any) -> dict[str, Any]:
    """`params` with the top-level entries of `base` (host arrays) put in their place."""
    out = dict(params)
    for key, value in base.items():
        if key not in out:
            raise ConfigError(f"the initial weights have an entry {key!r} the model does not "
                              f"(model entries: {sorted(out)})")
        want = [tuple(x.shape) for x in jax.tree.leaves(out[key])]
        got = [tuple(np.shape(x)) for x in jax.tree.leaves(value)]
        if jax.tree.structure(out[key]) != jax.tree.structure(value) or want != got:
            raise ConfigError(f"the initial weights for {key!r} do not fit the model's shapes: "
                              "check that the config matches the run or weights they came from")
        out[key] = jax.device_put(
            jax.tree.map(lambda v, s: np.asarray(v, s.dtype), value, out[key]), shardings[key])
    return out


def init_state(fns: TrainFns, method: Any, rng: jax.Array) -> TrainState:
    """A fresh, sharded train state. A method may supply initial weights for some or all of
    its parameter groups (`method.initial_params()` → {group: host arrays}, e.g. pretrained
    Stable Diffusion parts or a previous stage's run); those replace the random init, and
    when they cover every group no random init is compiled at all."""
    base = method.initial_params()
    groups = set(fns.abstract_state.params)
    if base is not None and set(base) == groups:
        zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), fns.abstract_state.params)
        return fns.from_params(_overlay(zeros, base, fns.state_shardings.params))
    state = fns.init(rng)
    if base:
        state = state.replace(
            params=_overlay(state.params, base, fns.state_shardings.params),
            ema_params=_overlay(state.ema_params, base, fns.state_shardings.ema_params))
    return state
