"""A trained PVDM autoencoder as the latent stage reads it: the config and EMA weights of a
pvdm_ae run (latest checkpoint) or of a folder written by `export_autoencoder`
(`python -m vdiff.methods.pvdm WORKDIR OUT`)."""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np

from vdiff.core.checkpoints import restore_ema_params
from vdiff.errors import ConfigError
from vdiff.methods.pvdm.autoencoder import PVDMAutoencoderStage
from vdiff.train import sharding


def load_autoencoder_config(workdir: str) -> ml_collections.ConfigDict:
    from vdiff.core.workdir import config_path, read_config

    path = config_path(workdir)
    cfg = read_config(workdir)
    if cfg is None:
        raise ConfigError(
            f"pvdm.autoencoder_workdir={workdir!r} holds no trained autoencoder "
            f"({path} is missing): train one first, e.g. python -m vdiff.main "
            f"--config=configs/pvdm_ae_digits.py --workdir=DIR, then pass "
            f"--config.pvdm.autoencoder_workdir=DIR")
    if cfg.method != "pvdm_ae":
        raise ConfigError(f"{path} is a {cfg.method!r} run, not a pvdm_ae autoencoder")
    return cfg


# An exported autoencoder: its config.json and this file (EMA autoencoder weights only, a
# quarter of a checkpoint: no optimizer state, no discriminators), small enough to move
# between machines and to read as `pvdm.autoencoder_workdir`.
EXPORTED_AUTOENCODER = "autoencoder_ema.msgpack"


def load_autoencoder_params(ae_config: Any, workdir: str) -> Any:
    """The autoencoder's EMA weights (host numpy) from the latest checkpoint in `workdir`,
    or from an `export_autoencoder` folder when `workdir` holds no checkpoints."""
    exported = os.path.join(workdir, EXPORTED_AUTOENCODER)
    if not os.path.isdir(os.path.join(workdir, "checkpoints")) and os.path.isfile(exported):
        from flax import serialization
        with open(exported, "rb") as f:
            return serialization.msgpack_restore(f.read())["params"]
    params, _ = restore_ema_params(ae_config, workdir, PVDMAutoencoderStage(ae_config),
                                   sharding.make_mesh((1, -1, 1)))
    return jax.tree.map(np.asarray, jax.device_get(params["autoencoder"]))


def export_autoencoder(workdir: str, out_dir: str) -> str:
    """Writes the trained autoencoder of `workdir` (latest checkpoint, EMA weights) to
    `out_dir` as config.json + EXPORTED_AUTOENCODER; returns the weights' path."""
    from flax import serialization

    config = load_autoencoder_config(workdir)
    params = load_autoencoder_params(config, workdir)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, EXPORTED_AUTOENCODER)
    with open(path + ".part", "wb") as f:
        f.write(serialization.msgpack_serialize({"params": params}))
    os.replace(path + ".part", path)  # whole or absent
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        f.write(config.to_json(indent=2))
    return path
