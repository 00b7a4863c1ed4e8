"""Config of the `interpolation` method and the run a config names.

`interpolation_defaults()` holds every setting of `vdiff.interpolation.settings.Settings`
with its default. Five of them are the shared sampling options of `--mode=sample` rather
than `config.interpolation` keys, so the flags every method takes act on them:

    ddim_steps      config.sample.num_steps       (--num_steps)
    guidance_scale  config.sample.guidance_scale  (--guidance_scale; SD text guidance)
    fps             config.sample.fps
    seed            --seed
    out             --output_dir, else the workdir

`config.sample.sampler` is 'ddim', the only sampler the schemes use; --num_frames, when
given, overrides `config.interpolation.num_frames`. `run_settings` refuses the other shared
options (a class label, an input video, ...) when they are set: they have no meaning here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from vdiff.errors import ConfigError
from vdiff.interpolation.settings import Settings

# Settings fields that come from the shared sampling options, not config.interpolation
SHARED = ("ddim_steps", "guidance_scale", "fps", "seed", "out")
# SampleOptions fields run_settings reads; any other one set away from its default is refused
USED_OPTIONS = ("application", "sampler", "num_steps", "guidance_scale", "num_frames", "seed",
                "output_dir", "fps")


def interpolation_defaults() -> ml_collections.ConfigDict:
    """Every key an interpolation run reads (module docstring)."""
    d = Settings()
    c = ml_collections.ConfigDict()
    c.method = "interpolation"
    c.interpolation = ml_collections.ConfigDict(
        {k: v for k, v in dataclasses.asdict(d).items() if k not in SHARED})
    c.sample = ml_collections.ConfigDict(dict(
        sampler="ddim", num_steps=d.ddim_steps, guidance_scale=d.guidance_scale, fps=d.fps))
    return c


def _refuse_unused(opts: Any) -> None:
    """A shared option interpolation does not read, set away from its default, is an error
    (it would otherwise be silently ignored)."""
    for f in dataclasses.fields(opts):
        if f.name in USED_OPTIONS:
            continue
        value = getattr(opts, f.name)
        if f.default is dataclasses.MISSING:  # a default_factory: empty when not set
            unset = not value
        else:
            unset = value == f.default or (f.name == "num_samples" and value == 1)
        if not unset:
            raise ConfigError(f"--{f.name}={value} has no meaning for interpolation (one video "
                              "between config.interpolation.image_a and image_b); leave it "
                              "unset")


def run_settings(config: Any, workdir: str, opts: Any) -> Settings:
    """The run that `config.interpolation` and the sampling options `opts`
    (`vdiff.sampling.SampleOptions`) name; it writes to --output_dir, else `workdir`."""
    if opts.sampler != "ddim":
        raise ConfigError(f"interpolation denoises with DDIM only (partial DDIM from each "
                          f"frame's noise level); got --sampler={opts.sampler}")
    _refuse_unused(opts)
    values = config.interpolation.to_dict()
    if values.get("dreampose_run") and opts.guidance_scale != config.sample.guidance_scale:
        raise ConfigError(f"--guidance_scale={opts.guidance_scale} is the text guidance of sd "
                          "models; a DreamPose run is guided by config.interpolation.s_image "
                          "and s_pose")
    values.update(ddim_steps=opts.num_steps, guidance_scale=opts.guidance_scale, fps=opts.fps,
                  seed=opts.seed, out=opts.output_dir or workdir)
    if opts.num_frames:
        values["num_frames"] = opts.num_frames
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(Settings)})
    if unknown:
        raise ConfigError(f"config.interpolation has unknown keys {unknown}")
    return Settings(**values)
