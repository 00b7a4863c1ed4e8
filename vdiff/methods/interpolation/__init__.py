"""Interpolation between two real images (Wang & Golland 2023) as a registered method, over
the library in `vdiff.interpolation` (schemes, textual inversion, CLIP ranking, the run).

    config.py   interpolation_defaults: every key; run_settings: config + sampling options
                → the run's `vdiff.interpolation.settings.Settings`
    method.py   'interpolation': the `interpolate` application; training and eval refused
"""

from vdiff.methods.interpolation.config import interpolation_defaults, run_settings
from vdiff.methods.interpolation.method import Interpolation, interpolate

__all__ = ["Interpolation", "interpolate", "interpolation_defaults", "run_settings"]
