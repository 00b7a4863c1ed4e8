"""The EMA parameters of a workdir's newest checkpoint that restores: what `--mode=sample`,
`--mode=eval` and a later stage (PVDM's latent model reading its autoencoder run) start from.

The abstract train state it restores onto comes from `vdiff.train.setup`, whose modules
import nothing of vdiff but `errors` (tests/test_import_graph.py keeps it that way).
"""

from __future__ import annotations

import os
from typing import Any

from vdiff.errors import UserError
from vdiff.train.checkpoint import Checkpointer
from vdiff.train.setup import build_train_fns


class CheckpointNotFoundError(UserError, RuntimeError):
    """No checkpoint to start from; the message says where it looked."""


def restore_ema_params(config: Any, workdir: str, method: Any, mesh: Any) -> tuple[Any, int]:
    """(EMA params, step) of the newest checkpoint in `workdir` that restores, placed with
    the config's sharding. Read-only: a damaged newer checkpoint is skipped with a warning but
    left in place (the trainer sets it aside), and a trainer may be saving meanwhile."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise CheckpointNotFoundError(
            f"no checkpoints in {directory}: train first with --mode=train and the same "
            f"--config and --workdir")
    ckpt = Checkpointer(directory, max_to_keep=1, save_every=0, async_save=False,
                        read_only=True)
    fns = build_train_fns(config, method, mesh)
    restored = ckpt.restore_newest(fns.abstract_state, set_aside=False)
    ckpt.close()
    if restored is None:
        raise CheckpointNotFoundError(f"{directory} holds no complete checkpoint")
    step, state, _ = restored
    return state.ema_params, step
