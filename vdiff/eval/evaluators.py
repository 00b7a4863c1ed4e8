"""Evaluators chosen in the config: `config.evals.<name> = dict(settings)`.

Each evaluator is built once per run (compiling its sampler, loading weights, caching
statistics of real data) and then called with the EMA params:

    evaluators = build_evaluators(config, method, mesh)     # [(name, evaluator)]
    results = run_evaluators(evaluators, params, rng)      # {'fvd': 123.4, ...}

The trainer calls them every `train.eval_every` steps and at the last step;
`--mode=eval` calls them on a finished run (vdiff/eval/run_eval.py). A method names the
evaluators that apply to it in its `evaluators` attribute (vdiff/methods/base.py). Registry:

    fvd                   FVD (Kinetics-400 I3D logits) of N sampled clips vs N clips of
                          the held-out split; clips shorter than 16 frames are stretched to
                          16 by repeating frames (both sets alike), grey is copied to RGB
    sinfusion_next_frame  SinFusion Predictor: PSNR of predicted frame j from real frame
                          j − k on the frames held out from training, vs copying frame j − k
    pvdm_reconstruction   PVDM autoencoder: PSNR, SSIM and LPIPS of reconstructions of N
                          held-out clips (per-frame metrics averaged over frames and clips)
    heldout_loss          the training loss on fixed batches of the training split and of the
                          held-out split, with the same noise for both: their gap shows a
                          model fitting its training videos rather than the data
    digit_score           moving digits only: how recognisable the digits in N sampled clips
                          are to a digit classifier (vdiff/eval/digit_score.py), next to the
                          same numbers for real frames; FVD cannot see this at 32×32
    nearest_train         memorisation: each of N sampled clips' distance to its nearest
                          training clip, against the same for fresh clips the model never saw
                          (vdiff/eval/nearest_neighbours.py)

The sampling evaluators (fvd, digit_score, nearest_train) sample in batches of their own
`batch_size` setting (0: `sample.num_samples`), rounded up to the data-parallel size.

The evaluators live in `sampling_evaluators` (fvd, digit_score, nearest_train),
`next_frame_evaluator` (sinfusion_next_frame) and `loss_evaluators` (heldout_loss,
pvdm_reconstruction); this module holds the registry, the settings check and the loop that
runs them, and re-exports the evaluator classes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jax

from vdiff.errors import ConfigError
from vdiff.eval.loss_evaluators import HeldOutLossEvaluator, PVDMReconstructionEvaluator
from vdiff.eval.next_frame_evaluator import SinFusionNextFrameEvaluator, best_shrinkage
from vdiff.eval.sampling_evaluators import (
    I3D_FRAMES,
    DigitScoreEvaluator,
    FVDEvaluator,
    NearestTrainEvaluator,
    to_i3d_clips,
)

__all__ = [
    "EVALUATORS",
    "I3D_FRAMES",
    "DigitScoreEvaluator",
    "FVDEvaluator",
    "HeldOutLossEvaluator",
    "NearestTrainEvaluator",
    "PVDMReconstructionEvaluator",
    "SinFusionNextFrameEvaluator",
    "best_shrinkage",
    "build_evaluators",
    "check_names",
    "run_evaluators",
    "settings_for",
    "to_i3d_clips",
]


def settings_for(name: str, defaults: dict[str, Any], given: Any) -> dict[str, Any]:
    """An evaluator's defaults overridden by `config.evals.<name>` (unknown keys: ConfigError)."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"config.evals.{name}: unknown setting(s) {unknown}; known: "
                          f"{sorted(defaults)}")
    return {**defaults, **given}


EVALUATORS: dict[str, Any] = {
    "fvd": FVDEvaluator,
    "sinfusion_next_frame": SinFusionNextFrameEvaluator,
    "pvdm_reconstruction": PVDMReconstructionEvaluator,
    "digit_score": DigitScoreEvaluator,
    "heldout_loss": HeldOutLossEvaluator,
    "nearest_train": NearestTrainEvaluator,
}


def check_names(config: Any) -> None:
    """Every `config.evals` entry names a known evaluator (cheap: nothing is built)."""
    for name in config.evals.keys():
        if name not in EVALUATORS:
            raise ConfigError(f"unknown evaluator config.evals.{name}; known: "
                              f"{sorted(EVALUATORS)}")


def build_evaluators(config: Any, method: Any, mesh: Any) -> list[tuple[str, Any]]:
    """Instantiates the `config.evals` entries that apply to this method (named in its
    `evaluators`; others are logged and skipped). Every entry's settings are checked."""
    check_names(config)
    out = []
    for name, given in config.evals.items():
        settings = settings_for(name, EVALUATORS[name].DEFAULTS, given)
        if name not in method.evaluators:
            logging.info("evaluator %s does not apply to this run; skipped", name)
            continue
        out.append((name, EVALUATORS[name](config, method, mesh, settings)))
    return out


def run_evaluators(evaluators: list[tuple[str, Any]], params: Any,
                   rng: jax.Array) -> dict[str, float]:
    results: dict[str, float] = {}
    for i, (name, evaluator) in enumerate(evaluators):
        logging.info("evaluator %s: running", name)
        t0 = time.perf_counter()
        new = evaluator(params, jax.random.fold_in(rng, i))
        results.update(new)
        # each evaluator's numbers as soon as they exist: a run cut short keeps them in its log
        logging.info("evaluator %s took %.1f s: %s", name, time.perf_counter() - t0,
                     ", ".join(f"{k} {_short(v)}" for k, v in sorted(new.items())))
    return results


def _short(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)
