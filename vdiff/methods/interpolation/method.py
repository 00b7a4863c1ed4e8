"""`interpolation` (Wang & Golland, ICML 2023): a video between two real images with a
pretrained latent diffusion model (`vdiff.interpolation`).

Training-free: the method's one entry point is its `interpolate` application
(`--mode=sample`). `--mode=train` (`runs`) and `--mode=eval` (`workdir_evaluation`) end in
a ConfigError that says so, and so do the training members of the Method contract, which a
training-free method cannot provide.
"""

from __future__ import annotations

import logging
from typing import Any

from vdiff.errors import ConfigError
from vdiff.interpolation import runner
from vdiff.methods.base import Method
from vdiff.methods.interpolation.config import run_settings

_SAMPLE = ("python -m vdiff.main --config=configs/interpolation.py --workdir=OUT "
           "--mode=sample")
_TRAINING_FREE = ("interpolation is training-free: it samples with a pretrained model "
                  "(config.interpolation.sd or dreampose_run)")


class Interpolation(Method):
    """The `interpolation` method: the `interpolate` application, no training."""

    applications = {"interpolate": "vdiff.methods.interpolation.method:interpolate"}
    application_hint = f"interpolation's application is 'interpolate': {_SAMPLE}"
    default_application = "interpolate"
    workdir_evaluation = "vdiff.methods.interpolation.method:evaluate"

    def __init__(self, config: Any):
        self.config = config

    @classmethod
    def runs(cls, config: Any, workdir: str) -> list[tuple[Any, str]]:
        raise ConfigError(f"{_TRAINING_FREE}; there is nothing to train: {_SAMPLE}")

    def _untrainable(self, member: str) -> ConfigError:
        return ConfigError(f"{_TRAINING_FREE}; it has no {member} (run {_SAMPLE})")

    def example_batch(self, batch_size: int) -> dict[str, Any]:
        raise self._untrainable("training batches")

    def init(self, rng: Any, batch: dict[str, Any]) -> Any:
        raise self._untrainable("parameters of its own to initialise")

    def loss(self, params: Any, batch: dict[str, Any], rng: Any, *, train: bool = True,
             step: Any = None) -> tuple[Any, dict[str, Any]]:
        raise self._untrainable("training loss")

    def sample(self, params: Any, rng: Any, *, num_samples: int, **kwargs: Any) -> Any:
        raise self._untrainable("periodic training samples")


def evaluate(config: Any, workdir: str) -> dict[str, float]:
    """`--mode=eval`: there is no trained run to evaluate."""
    del config, workdir
    raise ConfigError(f"{_TRAINING_FREE}; there is no run to evaluate (the schemes are "
                      "compared by benchmarks/studies/interpolation_schemes.py)")


def interpolate(config: Any, workdir: str, opts: Any) -> str:
    """The `interpolate` application: one interpolation video; returns its folder."""
    settings = run_settings(config, workdir, opts)
    runner.run(settings, log=logging.info)
    return settings.out
