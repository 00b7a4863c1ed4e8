"""Method registry: config.method → class. Explicit, no import side effects."""

from __future__ import annotations

import importlib
from typing import Any

from vdiff.errors import ConfigError

METHODS: dict[str, str] = {
    "vdm": "vdiff.methods.vdm:VDM",
    "vdm_sr": "vdiff.methods.vdm_sr:VDMSuperRes",
    "sinfusion": "vdiff.methods.sinfusion:make_sinfusion",  # picks the class by sinfusion.role
    "pvdm_ae": "vdiff.methods.pvdm:PVDMAutoencoderStage",
    "pvdm_ldm": "vdiff.methods.pvdm:PVDMLatentStage",
    "dreampose": "vdiff.methods.dreampose:DreamPose",
    "dreampose_vae": "vdiff.methods.dreampose:DreamPoseVAE",
}


def get_method(config: Any):
    """Instantiates the method named by `config.method`."""
    name = config.method
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known methods: {sorted(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)(config)


def training_runs(config: Any, workdir: str) -> list[tuple[Any, str]]:
    """The (config, workdir) runs one `--mode=train` performs: one, except for SinFusion,
    which trains each of its models into WORKDIR/<role>."""
    if config.method == "sinfusion":
        from vdiff.methods.sinfusion import training_runs as sinfusion_runs

        return sinfusion_runs(config, workdir)
    return [(config, workdir)]
