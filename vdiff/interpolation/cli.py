"""Interpolation video between two real images with a pretrained latent diffusion model.

    python -m vdiff.interpolation.cli --sd=SD_DIR --image_a=a.png --image_b=b.png \
        --prompt_a="..." --prompt_b="..." --num_frames=17 --scheme=did --out=OUT
    python -m vdiff.interpolation.cli --dreampose_run=WORKDIR/vae --image_a=a.png \
        --image_b=b.png --keypoints_a=a.json --keypoints_b=b.json --out=OUT

One flag per field of `vdiff.interpolation.settings.Settings` (its defaults); the run is
`vdiff.interpolation.runner.run`, the same as the `interpolation` method's
(`python -m vdiff.main --config=configs/interpolation.py --mode=sample
--application=interpolate`, docs/methods/interpolation.md). Writes OUT/interpolation.mp4,
OUT/frames/ and OUT/run.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from vdiff import errors
from vdiff.interpolation.settings import Settings

_HELP = {
    "sd": "diffusers-layout Stable Diffusion folder",
    "dreampose_run": "workdir of a DreamPose run trained here (instead of --sd; needs "
                     "--keypoints_a/--keypoints_b)",
    "s_image": "DreamPose image guidance scale",
    "s_pose": "DreamPose pose guidance scale",
    "context_interp": "DreamPose image contexts: slerp | lerp",
    "keypoints_a": "OpenPose JSON of image a",
    "keypoints_b": "OpenPose JSON of image b",
    "controlnet": "diffusers-layout OpenPose ControlNet folder",
    "control_profile": "constant | taper | sine",
    "scheme": "did | interp_denoise | interp",
    "shape": "linear | convex | concave",
    "branching": "DID branching factor, or one per depth: 3,2",
    "clip": "transformers CLIPModel folder for ranking candidates",
    "rank_prompt": "positive prompt for CLIP ranking (default: prompt_a and prompt_b joined)",
    "interactive": "save all candidates and their scores",
    "choices": "FRAME:CAND,... (or a JSON file) forced picks",
    "cache_dir": "textual inversion cache (default OUT/textinv_cache)",
    "resize": "HxW: resize both images to this size",
    "dtype": "compute dtype: float32 | bfloat16 | float16 (params stay float32)",
}
_REQUIRED = ("image_a", "image_b", "out")


def build_parser() -> argparse.ArgumentParser:
    p = errors.ArgumentParser(prog="python -m vdiff.interpolation.cli",
                              description=__doc__.split("\n")[1])
    for field in dataclasses.fields(Settings):
        name, default = field.name, field.default
        kwargs: dict[str, Any] = {"help": _HELP.get(name)}
        if name in _REQUIRED:
            kwargs["required"] = True
        elif isinstance(default, bool):
            kwargs["action"] = "store_true"
        else:
            kwargs.update(type=type(default), default=default)
        p.add_argument(f"--{name}", **kwargs)
    return p


def run(args: argparse.Namespace, log: Callable[[str], Any] = print) -> dict:
    """The run of parsed arguments (`runner.run`); returns what run.json holds."""
    from vdiff.interpolation import runner

    return runner.run(Settings(**vars(args)), log=log)


@errors.cli
def main(argv=None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
