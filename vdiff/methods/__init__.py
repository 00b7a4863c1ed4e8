"""Method registry: config.method → class. Explicit, no import side effects."""

from __future__ import annotations

import importlib
from typing import Any

from vdiff.errors import ConfigError

METHODS: dict[str, str] = {
    "vdm": "vdiff.methods.vdm:VDM",
    "vdm_sr": "vdiff.methods.vdm_sr:VDMSuperRes",
}


def get_method(config: Any):
    """Instantiates the method named by `config.method`."""
    name = config.method
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known methods: {sorted(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)(config)
