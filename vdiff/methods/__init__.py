"""Method registry: config.method → class. Explicit, no import side effects.

Every class subclasses `vdiff.methods.base.Method`; class-level hooks (`runs`,
`applications`, `workdir_evaluation`) work before a config names a concrete class (a
SinFusion config with role 'all' trains three). Each method is a package here (vdm, pvdm,
sinfusion, dreampose, interpolation) whose `__init__` re-exports its public names."""

from __future__ import annotations

from typing import Any

from vdiff.errors import ConfigError
from vdiff.methods.base import Method, resolve

METHODS: dict[str, str] = {
    "vdm": "vdiff.methods.vdm.method:VDM",
    "vdm_sr": "vdiff.methods.vdm.super_res:VDMSuperRes",
    "sinfusion": "vdiff.methods.sinfusion.roles:SinFusionModel",  # `create` picks the role
    "pvdm_ae": "vdiff.methods.pvdm.autoencoder:PVDMAutoencoderStage",
    "pvdm_ldm": "vdiff.methods.pvdm.latent:PVDMLatentStage",
    "dreampose": "vdiff.methods.dreampose.stages:DreamPose",
    "dreampose_vae": "vdiff.methods.dreampose.stages:DreamPoseVAE",
    "interpolation": "vdiff.methods.interpolation.method:Interpolation",  # training-free
}

def method_class(config: Any) -> type[Method]:
    """The class registered for `config.method`."""
    name = config.method
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known methods: {sorted(METHODS)}")
    return resolve(METHODS[name])


def get_method(config: Any) -> Method:
    """Instantiates the method named by `config.method`."""
    return method_class(config).create(config)


def training_runs(config: Any, workdir: str) -> list[tuple[Any, str]]:
    """The (config, workdir) runs one `--mode=train` performs (`Method.runs`)."""
    return method_class(config).runs(config, workdir)
