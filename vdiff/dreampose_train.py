"""Training loop for DreamPose's stages: in-memory data → the shared jitted `train_step`.

    python -m vdiff.dreampose_train --config=configs/dreampose_dataset.py:tiny --workdir=W

The generic trainer (`vdiff.train.trainer`) reads data through `vdiff.data.pipeline`,
which has no source for DreamPose's triples; this loop is the same thing minus
samples/evaluators: `build_train_fns` (sharded state, the one `train_step`), the method's
own iterator (`method.make_iterator`), the base weights overlaid on the fresh state
(`method.initial_params`), orbax checkpoints with the iterator position, automatic resume,
metrics.jsonl. (With a one-line hook in `trainer.train_and_evaluate` — use
`method.make_iterator` when the method has one — the generic trainer would run these
methods too; see the DreamPose notes in the report.)
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from vdiff.methods import get_method
from vdiff.train import sharding
from vdiff.train.checkpoint import Checkpointer
from vdiff.train.setup import build_train_fns


def _mesh(config: Any):
    shape = tuple(int(s) for s in config.mesh.shape)
    devices = jax.devices()
    if -1 not in shape:
        devices = devices[:math.prod(shape)]
    return sharding.make_mesh(shape, devices)


def _merge(state_params: Any, base: Any, shardings: Any) -> Any:
    """state params with the top-level entries of `base` (host numpy) put in their place."""
    out = dict(state_params)
    for key, value in base.items():
        if key not in out:
            raise KeyError(f"base weights have an entry {key!r} the model does not")
        want = [(tuple(x.shape)) for x in jax.tree.leaves(out[key])]
        got = [(tuple(np.shape(x))) for x in jax.tree.leaves(value)]
        if jax.tree.structure(out[key]) != jax.tree.structure(value) or want != got:
            raise ValueError(f"base weights for {key!r} do not fit the model's shapes")
        out[key] = jax.device_put(jax.tree.map(lambda v, s: np.asarray(v, s.dtype), value,
                                               out[key]), shardings[key])
    return out


def _state_from_params(config: Any, method: Any, fns: Any, base: Any) -> Any:
    from vdiff.train.state import TrainState, make_optimizer

    tx, _ = (method.optimizer(config.train) if hasattr(method, "optimizer")
             else make_optimizer(config.train))
    shardings = fns.state_shardings
    params = _merge({k: v for k, v in jax.tree.map(
        lambda a: np.zeros(a.shape, a.dtype), fns.abstract_state.params).items()},
        base, shardings.params)
    create = jax.jit(lambda p: TrainState.create(params=p, tx=tx), out_shardings=shardings)
    return create(params)


def train(config: Any, workdir: str, *, log_fn=None) -> Any:
    """Trains `config` (a DreamPose stage) into `workdir`; resumes from its checkpoint."""
    log = log_fn or logging.info
    os.makedirs(workdir, exist_ok=True)
    method = get_method(config)
    mesh = _mesh(config)
    fns = build_train_fns(config, method, mesh)
    data_iter = method.make_iterator(int(config.train.batch_size), int(config.seed))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"),
                        max_to_keep=int(config.train.keep_checkpoints),
                        save_every=int(config.train.checkpoint_every),
                        async_save=bool(config.train.async_checkpoints))
    rng_init, rng_train = jax.random.split(jax.random.key(int(config.seed)))
    latest = ckpt.latest_step()
    with jax.set_mesh(mesh), nn.logical_axis_rules(fns.rules):
        if latest is not None:
            state, data_state = ckpt.restore(latest, fns.abstract_state)
            data_iter.set_state(data_state)
            log(f"resumed {workdir} at step {latest}")
        else:
            base = method.initial_params()
            if base is not None and set(base) == set(fns.abstract_state.params):
                # Complete base weights (the subject and VAE-decoder stages): no random
                # init to compile, only the optimizer's state.
                state = _state_from_params(config, method, fns, base)
            else:
                state = fns.init(rng_init)
            if base is not None and set(base) != set(fns.abstract_state.params):
                params = _merge(state.params, base, fns.state_shardings.params)
                ema = _merge(state.ema_params, base, fns.state_shardings.ema_params)
                state = state.replace(params=params, ema_params=ema)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    step, total = int(jax.device_get(state.step)), int(config.train.num_steps)
    t0, metrics_path = time.perf_counter(), os.path.join(workdir, "metrics.jsonl")
    step_fn = None
    try:
        with jax.set_mesh(mesh), nn.logical_axis_rules(fns.rules):
            while step < total:
                batch = fns.global_batch(next(data_iter))
                if step_fn is None:
                    step_fn = fns.step.lower(state, batch, rng_train).compile()
                state, m = step_fn(state, batch, rng_train)
                step += 1
                last = step == total
                if step % int(config.train.log_every) == 0 or last:
                    values = {k: float(v) for k, v in jax.device_get(m).items()}
                    if values.get("finite", 1.0) < 1.0:
                        raise FloatingPointError(f"non-finite loss at step {step}: lower "
                                                 "train.lr")
                    values["step"] = step
                    values["seconds"] = time.perf_counter() - t0
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(values) + "\n")
                    log(f"{config.method}/{config.dreampose.stage} step {step}/{total} "
                        f"loss {values['loss']:.4f}")
                if ckpt.should_save(step) or last:
                    ckpt.save(step, state, data_iter.get_state(), force=True)
    finally:
        ckpt.close()
    return state


def main(argv: Any) -> None:
    del argv
    from absl import flags

    logging.getLogger().setLevel(logging.INFO)
    train(flags.FLAGS.config, flags.FLAGS.workdir, log_fn=print)


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "a configs/dreampose_*.py file",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "run directory")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
