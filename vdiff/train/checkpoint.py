"""Orbax checkpoints of the train state plus the data iterator position.

Saves are asynchronous and atomic (orbax writes to a temporary directory and
renames it when complete), so a run killed at any moment — SIGKILL included —
leaves only whole checkpoints behind. Restoring takes abstract arrays carrying
the *target* sharding, so a checkpoint restores onto any mesh.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """`CheckpointManager` with two items: `state` (pytree) and `data` (iterator JSON)."""

    def __init__(self, directory: str, *, max_to_keep: int, save_every: int,
                 async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.save_every = save_every
        self._last_saved: int | None = None  # an async save in flight is not in all_steps yet
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True,
                enable_async_checkpointing=async_save,
                save_interval_steps=1, cleanup_tmp_directories=True),
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

    def wait(self) -> None:
        """Blocks until pending async saves are committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


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
