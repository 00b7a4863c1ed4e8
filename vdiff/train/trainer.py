"""The one generic training loop: data → train_step → metrics, checkpoints, samples.

Resume is automatic: if the workdir holds a checkpoint, the state and the data
iterator position are restored, so a resumed run sees exactly the batches an
uninterrupted run would have seen (the step's RNG is `fold_in(seed, step)`).
SIGTERM/SIGINT save a checkpoint and exit cleanly; a non-finite loss stops the
run without writing the bad state.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from clu import parameter_overview  # imports no TensorFlow (clu.metric_writers would)
from jax.experimental import multihost_utils

from vdiff import config_lib, distributed, outputs, progress, runtime
from vdiff.core import workdir as workdir_lib
from vdiff.data import pipeline
from vdiff.eval import evaluators as evaluators_lib
from vdiff.eval import run_eval
from vdiff.errors import ConfigError, UserError
from vdiff.methods import get_method
from vdiff.train import metrics as metrics_lib
from vdiff.train import sharding
from vdiff.train.checkpoint import Checkpointer
from vdiff.train.setup import build_train_fns, init_state
from vdiff.train.state import TrainState


class NonFiniteLossError(UserError, RuntimeError):
    """Raised when the loss or gradient becomes NaN/inf; the last checkpoint is kept."""


class _StopFlag:
    """Turns the first SIGTERM/SIGINT into a request to checkpoint and stop."""

    def __init__(self):
        self.requested = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. notebooks running in threads)
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:  # second signal: give up immediately
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        logging.warning("%s received: saving a checkpoint, then stopping "
                        "(send again to abort without saving)", self.requested)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _over_budget(config: Any, t_start: float) -> bool:
    """Whether train.max_train_seconds has passed; process 0 decides for all processes,
    so every process stops (and joins the checkpoint) at the same step."""
    limit = float(config.train.get("max_train_seconds", 0) or 0)
    if limit <= 0:
        return False
    over = np.bool_(time.perf_counter() - t_start > limit)
    if jax.process_count() > 1:
        over = multihost_utils.broadcast_one_to_all(over)
    return bool(over)


def _is_main_process() -> bool:
    return jax.process_index() == 0


def _log(msg: str, *args: Any) -> None:
    if _is_main_process():
        logging.info(msg, *args)


PARAMETER_TABLE_LOG_ROWS = 40  # the log shows this many rows; parameters.txt has them all


def log_parameter_overview(params: Any, workdir: str) -> None:
    """Logs clu's parameter table (name, shape, dtype, size, sharding) and writes it in full
    to WORKDIR/parameters.txt (process 0). Reads only shapes and shardings: no device work."""
    if not _is_main_process():
        return
    table = parameter_overview.get_parameter_overview(params, include_stats="sharding")
    with open(os.path.join(workdir, "parameters.txt"), "w") as f:
        f.write(table + "\n")
    short = parameter_overview.get_parameter_overview(
        params, include_stats="sharding", max_lines=PARAMETER_TABLE_LOG_ROWS + 6)
    _log("parameters (all of them in %s):\n%s", os.path.join(workdir, "parameters.txt"), short)


def check_config(config: Any) -> None:
    """Cheap consistency checks with messages that say what to change."""
    if config.train.batch_size % jax.process_count():
        raise ConfigError(f"train.batch_size={config.train.batch_size} is not divisible by the "
                          f"number of processes ({jax.process_count()})")
    if config.train.num_steps <= 0:
        raise ConfigError("train.num_steps must be positive")


def train_and_evaluate(config: Any, workdir: str) -> TrainState:
    """Trains `config` in `workdir`, resuming from its latest checkpoint if any. Holds the
    workdir lock throughout, so a second run there stops before it touches anything."""
    check_config(config)
    with workdir_lib.locked(workdir):
        return _train_locked(config, workdir)


def _train_locked(config: Any, workdir: str) -> TrainState:
    method = get_method(config)
    mesh = sharding.make_mesh(config.mesh.shape)
    if config.train.batch_size % sharding.data_parallel_size(mesh):
        raise ConfigError(f"train.batch_size={config.train.batch_size} must be divisible by the "
                         f"data-parallel mesh size {sharding.data_parallel_size(mesh)} "
                         f"(mesh {dict(mesh.shape)})")
    _log("mesh %s over %d devices (%s), %d process(es)", dict(mesh.shape), mesh.size,
         jax.devices()[0].device_kind, jax.process_count())
    _log("compute on %s: %s", jax.default_backend(), ", ".join(
        f"{k}={v}" for k, v in runtime.resolved_model_settings(config.model).items()))

    # Data first: a missing dataset should fail before minutes of compilation.
    data_iter = make_data_iterator(config, method)

    fns = build_train_fns(config, method, mesh)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"),
                        max_to_keep=config.train.keep_checkpoints,
                        save_every=config.train.checkpoint_every,
                        async_save=config.train.async_checkpoints)
    rng_init, rng_train, rng_sample = jax.random.split(config_lib.root_key(config), 3)

    restored = ckpt.restore_newest(fns.abstract_state, set_aside=True)
    latest = None if restored is None else restored[0]
    if restored is not None:
        _, state, data_state = restored
        restore_data_state(data_iter, data_state, config.data)
        _log("resumed from %s at step %d", ckpt.directory, latest)
    else:
        with jax.set_mesh(mesh), nn.logical_axis_rules(fns.rules):
            state = init_state(fns, method, rng_init)
        _log("initialized a new run in %s", workdir)
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(fns.abstract_state.params))
    _log("%s: %.2fM parameters", config.method, num_params / 1e6)
    log_parameter_overview(fns.abstract_state.params, workdir)
    if _is_main_process():
        workdir_lib.write_config(workdir, config)

    # Lines a killed run wrote after its last checkpoint are dropped: they are redone.
    writer = metrics_lib.MetricWriter(workdir, enabled=_is_main_process(),
                                      resume_step=latest or 0)
    step = int(jax.device_get(state.step))
    total = config.train.num_steps
    if step >= total:
        _log("run already complete: step %d of train.num_steps=%d in %s (raise "
             "--config.train.num_steps to continue)", step, total, workdir)
    try:
        with _StopFlag() as stop, jax.set_mesh(mesh), nn.logical_axis_rules(fns.rules):
            step_fn, flops = None, None
            peak = metrics_lib.peak_flops_per_device()
            sample_fn = make_sample_fn(method, config, mesh)
            # Built at the first evaluation, so a run stopped before it never pays their
            # set-up (I3D weights, reference clips); unknown names still fail here.
            evaluators_lib.check_names(config)
            evaluators = None
            rng_eval = jax.random.fold_in(rng_sample, 1)
            window = metrics_lib.WindowMean()
            t_window, steps_window = time.perf_counter(), 0
            t_start, step_start = time.perf_counter(), step
            # ETA from the steady step time: train-step time only (no compile, samples or
            # evals), from the end of the first logged window on (before: that window's rate).
            eta_rate, step_seconds = progress.SteadyRate(), 0.0
            skipped = 0  # non-finite steps skipped in this invocation
            while step < total:
                batch = fns.global_batch(next(data_iter))
                if step_fn is None:
                    t0 = time.perf_counter()
                    lowered = fns.step.lower(state, batch, rng_train)
                    step_fn = lowered.compile()
                    flops = metrics_lib.step_flops(lowered, step_fn, mesh.size)
                    _log("compiled the train step in %.1fs", time.perf_counter() - t0)
                    distributed.barrier("train_step_compiled")  # first run's collectives
                    t_window = time.perf_counter()
                state, m = step_fn(state, batch, rng_train)
                step += 1
                steps_window += 1
                window.add(m)

                is_last = step == total
                log_now = step % config.train.log_every == 0 or is_last
                if log_now and not stop.requested and _over_budget(config, t_start):
                    stop.requested = f"train.max_train_seconds={config.train.max_train_seconds}"
                save_now = ckpt.should_save(step) or is_last or stop.requested
                if log_now or save_now:
                    values = window.compute()
                    bad = int(round((1.0 - values.get("finite", 1.0)) * steps_window))
                    skipped += bad
                    if skipped > int(config.train.get("max_nonfinite_steps", 0)):
                        raise NonFiniteLossError(
                            f"non-finite loss or gradient between steps {step - steps_window} "
                            f"and {step} (last window mean loss {values['loss']}); "
                            f"the update was not applied and the last good checkpoint "
                            f"(step {ckpt.latest_step()}) is intact. Lower train.lr, "
                            f"check train.grad_clip and the data.")
                    if bad:
                        logging.warning("skipped %d non-finite step(s) between steps %d and %d "
                                        "(%d in all, train.max_nonfinite_steps=%d)", bad,
                                        step - steps_window, step, skipped,
                                        config.train.get("max_nonfinite_steps", 0))
                    if skipped:
                        values["skipped_steps"] = skipped
                    dt = time.perf_counter() - t_window
                    rate = steps_window / max(dt, 1e-9)
                    values["steps_per_sec"] = rate
                    if flops is not None and peak is not None:
                        values["tflops_per_sec_per_device"] = flops * rate / 1e12
                        values["mfu"] = flops * rate / peak
                    values.pop("finite", None)
                    writer.write_scalars(step, values)
                    step_seconds += dt
                    eta_rate.mark(step - step_start, step_seconds)
                    eta = eta_rate.eta(total - step)
                    extra = "".join(f" | {k} {values[k]:.4f}" for k in ("loss_video", "loss_image")
                                    if k in values)
                    _log("step %d/%d | loss %.4f%s | %.2f steps/s | ETA %s", step, total,
                         values["loss"], extra, rate, progress.format_duration(
                             (total - step) / max(rate, 1e-9) if eta is None else eta))
                    window = metrics_lib.WindowMean()
                    t_window, steps_window = time.perf_counter(), 0
                if save_now:
                    ckpt.save(step, state, data_state_of(data_iter, config.data), force=True)
                every = config.train.sample_every
                if config.sample.num_samples and ((every and step % every == 0) or is_last):
                    generate_samples(sample_fn, config, state, rng_sample, workdir, step)
                    t_window = time.perf_counter()
                every = config.train.eval_every
                if config.evals and ((every and step % every == 0) or is_last):
                    if evaluators is None:
                        evaluators = evaluators_lib.build_evaluators(config, method, mesh)
                    if evaluators:
                        results = evaluators_lib.run_evaluators(evaluators, state.ema_params,
                                                                rng_eval)
                        run_eval.write_results(workdir, step, results)
                        _log("eval at step %d: %s", step, " | ".join(
                            f"{k} {v:.4g}" for k, v in results.items()))
                        t_window = time.perf_counter()
                if stop.requested and not is_last:
                    # The signal may land after `save_now` was computed (while this step's
                    # results were being fetched): save here too; a no-op if already saved.
                    ckpt.save(step, state, data_state_of(data_iter, config.data), force=True)
                    ckpt.wait()
                    _log("stopped at step %d after %s; rerun the same command to resume",
                         step, stop.requested)
                    break
    finally:
        ckpt.close()
        writer.close()
        getattr(data_iter, "close", lambda: None)()  # stops grain's worker processes
    return state


def make_data_iterator(config: Any, method: Any):
    """The run's host-local batches: the shared pipeline, or the method's own source for
    methods whose data is not a video dataset (DreamPose's photo/pose/frame triples, PVDM's
    cached latents)."""
    it = method.make_iterator(config.train.batch_size // jax.process_count(),
                              int(config.seed) + jax.process_index())
    if it is not None:  # None: the method reads the shared pipeline
        return it
    return pipeline.make_iterator(
        config.data, split="train", seed=config.seed, global_batch_size=config.train.batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())


def data_state_of(data_iter: Any, data_config: Any) -> dict[str, Any]:
    """The iterator position as JSON. Every process's shard advances in lockstep, so the
    position (an index into the process's own shard) is the same on all processes."""
    return {"iterator": data_iter.get_state(), "worker_count": int(data_config.worker_count)}


def restore_data_state(data_iter: Any, saved: dict[str, Any], data_config: Any) -> None:
    """Puts the iterator where the checkpoint left it (the stream continues, not restarts)."""
    if "iterator" not in saved:  # checkpoints written before the worker_count field
        saved = {"iterator": saved, "worker_count": 0}
    if saved["worker_count"] != int(data_config.worker_count):
        raise ConfigError(
            f"this checkpoint's data position was saved with data.worker_count="
            f"{saved['worker_count']}; resume with --config.data.worker_count="
            f"{saved['worker_count']} (the stream layout depends on it)")
    data_iter.set_state(saved["iterator"])


def make_sample_fn(method: Any, config: Any, mesh: Any):
    """Jitted sampler of the periodic samples, built once so each call reuses the compile."""
    s = config.sample
    if method.host_sample:  # loops on the host (DreamPose): not jitted
        return lambda p, r: method.sample(p, r, num_samples=s.num_samples,
                                          num_steps=s.num_steps)
    # The model pins its batch to the data axes, so the sample count must divide evenly.
    num_samples = sharding.round_up_to_data_parallel(s.num_samples, mesh)
    return jax.jit(lambda p, r: method.sample(
        p, r, num_samples=num_samples, num_steps=s.num_steps,
        guidance_scale=s.guidance_scale, gamma=s.gamma))


def generate_samples(sample_fn: Any, config: Any, state: TrainState, rng: jax.Array,
                     workdir: str, step: int) -> None:
    """Samples from the EMA params and writes videos + a PNG grid under workdir/samples."""
    s = config.sample
    t0 = time.perf_counter()
    videos = sample_fn(state.ema_params, jax.random.fold_in(rng, step))
    if jax.process_count() > 1:
        videos = multihost_utils.process_allgather(videos, tiled=True)
    videos = np.asarray(jax.device_get(videos))[:s.num_samples]
    if _is_main_process():
        directory = os.path.join(workdir, "samples", f"step_{step:07d}")
        paths = outputs.write_videos(
            videos, directory, fps=s.fps, formats=("mp4",),
            info={"step": step, "num_steps": s.num_steps, "gamma": s.gamma,
                  "guidance_scale": s.guidance_scale, "params": "ema"})
        _log("wrote %d sample videos + grid to %s (%.1fs)", len(paths) - 1, directory,
             time.perf_counter() - t0)
