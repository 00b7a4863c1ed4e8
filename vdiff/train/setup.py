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

    def global_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return sharding.global_batch(local_batch, self.mesh)


def build_train_fns(config: Any, method: Any, mesh: Any) -> TrainFns:
    """Creates state shardings from logical axis rules (eval_shape → shardings → jitted init)."""
    rules = sharding.rules_from_config(config.sharding.logical_axis_rules)
    # A method with several parameter groups (PVDM: autoencoder + discriminators, or a
    # frozen autoencoder) builds its own optax transform; the rest use `train`'s optimizer.
    tx, schedule = (method.optimizer(config.train) if hasattr(method, "optimizer")
                    else make_optimizer(config.train))
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
    return TrainFns(mesh, rules, init_fn, step, state_shardings, abstract_state, batch_shardings)
