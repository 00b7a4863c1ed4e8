"""The one train step every method goes through.

`train_step(state, batch, rng, *, method, tx, schedule, ema_decay)` is pure:
grads of `method.loss`, optax update (clipping lives in `tx`), EMA, health
metrics. A step whose loss, gradient or update is not finite leaves the state unchanged
and reports `finite = 0`, so the trainer can stop with the last good state
intact. `make_train_step` jits it with explicit shardings and state donation.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import optax

from vdiff.train.state import TrainState, ema_decay_at


class Method(Protocol):
    """What the train step needs from a method: its loss. The whole contract, which every
    method class implements, is `vdiff.methods.base.Method`; train/ does not import it
    (methods import train.state, so the dependency points one way)."""

    def loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array,
             *, train: bool, step: jax.Array | None = None
             ) -> tuple[jax.Array, dict[str, jax.Array]]: ...


def _global_norm(tree: Any) -> jax.Array:
    return optax.tree.norm(jax.tree.map(lambda x: x.astype(jnp.float32), tree))


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               method: Method, tx: optax.GradientTransformation, schedule: optax.Schedule,
               ema_decay: float) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step; returns the new state and scalar metrics."""
    rng = jax.random.fold_in(rng, state.step)
    with jax.named_scope("forward_backward"):
        (loss, aux), grads = jax.value_and_grad(
            lambda p: method.loss(p, batch, rng, train=True, step=state.step),
            has_aux=True)(state.params)
    with jax.named_scope("optimizer"):
        updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
    with jax.named_scope("ema"):
        d = ema_decay_at(state.step, ema_decay)
        new_ema = jax.tree.map(lambda e, p: (d * e + (1 - d) * p).astype(e.dtype),
                               state.ema_params, new_params)

    grad_norm, update_norm = _global_norm(grads), _global_norm(updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(update_norm)
    keep = lambda new, old: jax.tree.map(  # noqa: E731
        lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = TrainState(
        step=state.step + 1,
        params=keep(new_params, state.params),
        ema_params=keep(new_ema, state.ema_params),
        opt_state=keep(new_opt_state, state.opt_state),
    )
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "param_norm": _global_norm(state.params),
        "update_norm": update_norm,
        "learning_rate": schedule(state.step),
        "finite": finite.astype(jnp.float32),
        **aux,
    }
    return new_state, metrics


def make_train_step(*, method: Method, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, ema_decay: float, state_shardings: Any,
                    batch_shardings: Any, replicated: Any):
    """`jax.jit` of `train_step` with in/out shardings and the state donated."""
    step = functools.partial(train_step, method=method, tx=tx, schedule=schedule,
                             ema_decay=ema_decay)
    return jax.jit(step,
                   in_shardings=(state_shardings, batch_shardings, replicated),
                   out_shardings=(state_shardings, replicated),
                   donate_argnums=(0,))
