"""Train state and the optimizer built from the config."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from vdiff.errors import ConfigError


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: step, params, EMA params, optimizer state."""

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any

    @classmethod
    def create(cls, *, params: Any, tx: optax.GradientTransformation) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params,
                   ema_params=jax.tree.map(jnp.copy, params), opt_state=tx.init(params))


def learning_rate_schedule(train_config: Any) -> optax.Schedule:
    """Linear warmup to `lr`, then constant, cosine decay to `lr * final_lr_fraction`, or
    'step': lr × lr_decay_rate^⌊step / lr_decay_every⌋ (SinFusion's step decay)."""
    lr, warmup = float(train_config.lr), int(train_config.warmup_steps)
    kind = train_config.lr_schedule
    if kind == "constant":
        return optax.warmup_constant_schedule(0.0, lr, max(warmup, 1)) if warmup else optax.constant_schedule(lr)
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, max(warmup, 1), max(int(train_config.num_steps), warmup + 1),
            end_value=lr * float(train_config.final_lr_fraction))
    if kind == "step":
        every = int(train_config.lr_decay_every)
        if every <= 0:
            raise ConfigError("train.lr_schedule='step' needs train.lr_decay_every > 0")
        decay = optax.exponential_decay(lr, every, float(train_config.lr_decay_rate),
                                        staircase=True)
        if not warmup:
            return decay
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])
    raise ConfigError(f"unknown train.lr_schedule {kind!r}; use 'constant', 'cosine' or 'step'")


def make_optimizer(train_config: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Adam(W) with global-norm clipping; returns (tx, schedule) so the lr can be logged."""
    schedule = learning_rate_schedule(train_config)
    parts = []
    if train_config.grad_clip and train_config.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(float(train_config.grad_clip)))
    parts.append(optax.adamw(schedule, b1=float(train_config.b1), b2=float(train_config.b2),
                             eps=float(train_config.adam_eps),
                             weight_decay=float(train_config.weight_decay)))
    return optax.chain(*parts), schedule


def ema_decay_at(step: jax.Array, decay: float, warmup: bool = True) -> jax.Array:
    """EMA decay with the usual warmup min(decay, (1+n)/(10+n)) so short runs still average."""
    decay = jnp.asarray(decay, jnp.float32)
    if not warmup:
        return decay
    n = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + n) / (10.0 + n))
