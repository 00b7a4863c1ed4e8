"""Orbax checkpoints of the train state plus the data iterator position.

Saves are asynchronous and atomic (orbax writes to a temporary directory and
renames it when complete), so a run killed at any moment — SIGKILL included —
leaves only whole checkpoints behind. Restoring takes abstract arrays carrying
the *target* sharding, so a checkpoint restores onto any mesh.

A checkpoint damaged later (a truncated file, a half-copied workdir) is skipped:
`restore_newest` walks back to the newest one that restores, and the trainer moves the
damaged ones to WORKDIR/checkpoints_bad/ (never deleting them).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from vdiff.errors import CheckpointRestoreError


def _no_replica_parallel_saves_on_cpu() -> None:
    """Orbax splits a replicated array across its replicas so that each device copies a
    slice to the host (replica-parallel saving, its default except under JAX_PLATFORMS=gpu).
    That compiles one slicing program per array shape on the first save: ~10 s for a small
    train state over 8 CPU devices, where it gains nothing, since CPU devices already live
    in host memory. On CPU every array is saved from its first replica instead."""
    if jax.default_backend() == "cpu":
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False),
            override=True)


class Checkpointer:
    """`CheckpointManager` with two items: `state` (pytree) and `data` (iterator JSON)."""

    def __init__(self, directory: str, *, max_to_keep: int, save_every: int,
                 async_save: bool = True, read_only: bool = False):
        # read_only (sample/eval): never create or clean up anything (a trainer may be saving
        # there meanwhile). Not orbax's read_only option: it logs three warnings per use.
        self.directory = os.path.abspath(directory)
        _no_replica_parallel_saves_on_cpu()
        self.save_every = save_every
        self._last_saved: int | None = None  # an async save in flight is not in all_steps yet
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=not read_only,
                enable_async_checkpointing=async_save,
                save_interval_steps=1, cleanup_tmp_directories=not read_only),
            item_names=("state", "data"),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        return self.save_every > 0 and step % self.save_every == 0

    def save(self, step: int, state: Any, data_state: dict[str, Any] | None, *,
             force: bool = False) -> bool:
        """Starts an (async) save; returns False if this step is already saved."""
        if step == self._last_saved or step in self.all_steps():
            return False
        args = {"state": ocp.args.StandardSave(state)}
        args["data"] = ocp.args.JsonSave(data_state or {})
        saved = self._manager.save(step, args=ocp.args.Composite(**args), force=force)
        if saved:
            self._last_saved = step
            logging.info("checkpoint: saving step %d to %s", step, self.directory)
        return saved

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restores (state, data_state) onto the shardings carried by `abstract_state`."""
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore()))
        return restored["state"], restored["data"]

    def restore_newest(self, abstract_state: Any, *, set_aside: bool
                       ) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, data_state) of the newest checkpoint that restores; None if there
        is none. Each newer one that fails is logged (step, exception, first line) and, with
        `set_aside`, moved to `<directory>_bad/` once an older one restored: only then is the
        failure the checkpoint's and not a changed config's. If none restores: one error."""
        failed: list[tuple[int, str]] = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                state, data = self.restore(step, abstract_state)
                error = None
            except Exception as e:  # noqa: BLE001 — any failure means "try an older one"
                error = e
            if not _all_processes(error is None):
                reason = _first_line(error) if error else "failed on another process"
                logging.warning("checkpoint: skipping step %d of %s, which does not restore "
                                "(%s)", step, self.directory, reason)
                failed.append((step, reason))
                continue
            if set_aside and failed:
                for bad, _ in failed:
                    self._set_aside(bad)
                self._manager.reload()
            return step, state, data
        if failed:
            step, reason = failed[0]
            raise CheckpointRestoreError(
                f"none of the {len(failed)} checkpoint(s) in {self.directory} restores (newest, "
                f"step {step}: {reason}); if the config changed since they were written, use "
                f"the run's config.json")
        return None

    def _set_aside(self, step: int) -> None:
        """Moves step's directory to <directory>_bad/<step>-<time> (outside orbax's view)."""
        if jax.process_index() == 0:
            bad_root = self.directory + "_bad"
            os.makedirs(bad_root, exist_ok=True)
            dest = os.path.join(bad_root, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
            os.rename(os.path.join(self.directory, str(step)), dest)
            logging.warning("checkpoint: moved step %d, which does not restore, to %s",
                            step, dest)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"checkpoint_set_aside_{step}")

    def wait(self) -> None:
        """Blocks until pending async saves are committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _first_line(error: BaseException) -> str:
    """`Type: first line of the message`, at most 200 characters, for one-line logs."""
    lines = [x.strip() for x in str(error).splitlines() if x.strip()]
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 200 else text[:197] + "..."


def _all_processes(ok: bool) -> bool:
    """Whether `ok` holds on every process (they must agree on which step they restored)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils
    return bool(np.min(multihost_utils.process_allgather(np.int32(ok))))


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs with target shardings, for restoring onto any mesh."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def load_raw(directory: str, step: int | None = None) -> tuple[int, Any, dict[str, Any]]:
    """Reads (step, state pytree as numpy, data state) without a target: for tests and tools."""
    manager = ocp.CheckpointManager(
        os.path.abspath(directory), options=ocp.CheckpointManagerOptions(read_only=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": ocp.JsonCheckpointHandler()})
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    # A target on this process's first device, so checkpoints written by any number of
    # processes (another topology) read back here.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    meta = manager.item_metadata(step)["state"]
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          meta.tree if hasattr(meta, "tree") else meta)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    manager.close()
    return step, jax.tree.map(lambda x: jax.device_get(x), restored["state"]), restored["data"]
