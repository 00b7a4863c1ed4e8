r"""Samplers driven by a `denoise_fn(z, logsnr) -> x̂0` closure, and the registry that picks
one by name.

The sampler never knows which network is behind `denoise_fn`; `logsnr` is passed with the
batch shape [B].  ε-, x0- and v-parameterised networks all fit: wrap the network output with
`targets.predictions` (or `guidance.guided_denoiser`) so the closure returns x̂0.

This module is the public face of the samplers; they live in

    sampler_loop          the time grid, random streams and post-step hook every sampler
                          shares (`run_sampler`), and the closure types
    ancestral_ddim        ancestral (γ variance interpolation) and DDIM (η) steps and samplers
    predictor_corrector   ancestral predictor + Langevin corrector (`pc_sample`)
    dpm_solver            DPM-Solver++(2M)
    truncated             DDIM from a latent part-way down (`ddim_from`) and SDEdit-style
                          `truncated_sample`

and every name below is importable from here.

Function evaluations (NFE, calls of `denoise_fn` per sample)
------------------------------------------------------------
ancestral N, ddim N, dpmpp_2m N, pc N + M (N − 1) with M corrector steps
(:func:`num_function_evals`).  A guided closure costs more per call: classifier-free guidance
with K conditions evaluates the network K + 1 times, reconstruction guidance adds one
backward pass.
"""

from __future__ import annotations

from typing import Any, Callable

from vdiff.diffusion.ancestral_ddim import (
    DEFAULT_GAMMA,
    ancestral_posterior,
    ancestral_sample,
    ancestral_step,
    ddim_sample,
    ddim_step,
)
from vdiff.diffusion.dpm_solver import dpm_solver_pp_2m_sample, dpm_solver_pp_2m_step
from vdiff.diffusion.predictor_corrector import (
    DEFAULT_LANGEVIN_DELTA,
    langevin_corrector_step,
    pc_sample,
)
from vdiff.diffusion.sampler_loop import (
    Array,
    DenoiseFn,
    PostStepFn,
    Scalar,
    Schedule,
    StepFn,
)
from vdiff.diffusion.truncated import ddim_from, truncated_sample

__all__ = [
    "Array",
    "DEFAULT_GAMMA",
    "DEFAULT_LANGEVIN_DELTA",
    "DenoiseFn",
    "PostStepFn",
    "Scalar",
    "Schedule",
    "StepFn",
    "ancestral_posterior",
    "ancestral_sample",
    "ancestral_step",
    "ddim_from",
    "ddim_sample",
    "ddim_step",
    "dpm_solver_pp_2m_sample",
    "dpm_solver_pp_2m_step",
    "get_sampler",
    "langevin_corrector_step",
    "num_function_evals",
    "pc_sample",
    "sample",
    "sampler_names",
    "truncated_sample",
]


def _sampler_registry() -> dict[str, Callable[..., Array]]:
    return {
        "ancestral": ancestral_sample,
        "ddim": ddim_sample,
        "pc": pc_sample,
        "dpmpp_2m": dpm_solver_pp_2m_sample,
    }


def sampler_names() -> tuple[str, ...]:
    """Names accepted by :func:`sample`."""
    return tuple(sorted(_sampler_registry()))


def get_sampler(name: str) -> Callable[..., Array]:
    """The sampler function registered as `name`; ValueError listing the names otherwise."""
    registry = _sampler_registry()
    if name not in registry:
        raise ValueError(f"Unknown sampler {name!r}; known: {sorted(registry)}")
    return registry[name]


def sample(
    *,
    sampler: str,
    denoise_fn: DenoiseFn,
    rng: Array,
    shape: tuple[int, ...],
    logsnr_schedule: Schedule,
    num_steps: int | Array,
    **kwargs: Any,
) -> Array:
    """Dispatch to a sampler by name ('ancestral', 'ddim', 'pc', 'dpmpp_2m').

    `kwargs` are the sampler's own options (gamma, eta, num_corrector_steps, delta, clip_x0,
    dtype, post_step_fn); an option the sampler does not take raises TypeError.
    """
    fn = get_sampler(sampler)
    return fn(
        denoise_fn=denoise_fn, rng=rng, shape=shape, logsnr_schedule=logsnr_schedule,
        num_steps=num_steps, **kwargs,
    )


def num_function_evals(sampler: str, num_steps: int, **kwargs: Any) -> int:
    """Calls of `denoise_fn` per sample: N for 'ancestral', 'ddim', 'dpmpp_2m';
    N + M (N − 1) for 'pc' with M = `num_corrector_steps` (default 1).  Other kwargs are ignored."""
    get_sampler(sampler)
    if sampler == "pc":
        corrector = kwargs.get("num_corrector_steps", 1)
        return num_steps + corrector * (num_steps - 1)
    return num_steps

