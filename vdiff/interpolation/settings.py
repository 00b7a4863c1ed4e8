"""The settings of one interpolation run and their checks.

`Settings` holds every setting with its default; `python -m vdiff.interpolation.cli` takes its
flags from it and `configs/interpolation.py` its keys (`vdiff.methods.interpolation.config`),
so the two entry points share one set of defaults. Paths, prompts, choices and resize are
strings where "" means not given. Messages name a setting by its field name, which is the CLI
flag (`--scheme`) and the config key (`--config.interpolation.scheme`) alike; the five that
`vdiff.main` takes from its shared sampling options (ddim_steps, guidance_scale, fps, seed,
out) are listed in vdiff/methods/interpolation/config.py.
"""

from __future__ import annotations

import dataclasses
import os

from vdiff.errors import ConfigError

DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass
class Settings:
    """One run: the model, the two images, the scheme and its options, the outputs."""

    # the model: a diffusers Stable Diffusion folder or a DreamPose run trained here
    sd: str = ""
    dreampose_run: str = ""
    s_image: float = 2.0  # DreamPose image guidance
    s_pose: float = 4.0  # DreamPose pose guidance
    context_interp: str = "slerp"  # DreamPose image contexts: slerp | lerp
    # the two images, their prompts (SD) and keypoints (OpenPose JSON)
    image_a: str = ""
    image_b: str = ""
    prompt_a: str = ""
    prompt_b: str = ""
    negative: str = ""
    keypoints_a: str = ""
    keypoints_b: str = ""
    controlnet: str = ""  # diffusers OpenPose ControlNet folder (SD pose guidance)
    control_strength: float = 1.0
    control_profile: str = "constant"  # constant | taper | sine
    # the scheme
    num_frames: int = 17
    scheme: str = "did"  # did | interp_denoise | interp
    noise_min: float = 0.3
    noise_max: float = 0.55
    shape: str = "linear"  # linear | convex | concave
    branching: str = "2"  # DID branching factor, or one per depth: "3,2"
    ddim_steps: int = 200
    guidance_scale: float = 7.5  # SD text guidance
    # candidates per frame, CLIP ranking and picks
    candidates: int = 1
    clip: str = ""  # transformers CLIPModel folder
    rank_prompt: str = ""  # default: prompt_a and prompt_b joined
    interactive: bool = False  # save every candidate and its scores
    choices: str = ""  # FRAME:CAND,... or a JSON file: forced picks
    # textual inversion (SD)
    inversion_steps: int = 0
    inversion_lr: float = 1e-4
    cache_dir: str = ""  # default: OUT/textinv_cache
    # compute and outputs
    resize: str = ""  # HxW: both images are resized to it
    dtype: str = "float32"  # compute dtype; params stay float32
    seed: int = 0
    fps: int = 8
    out: str = ""


def parse_hw(spec: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise ConfigError(f"resize must be HxW (e.g. 512x512), got {spec!r}") from None
    if h <= 0 or w <= 0:
        raise ConfigError(f"resize must be positive, got {spec!r}")
    return h, w


def parse_branching(spec: str) -> int | list[int]:
    try:
        vals = [int(v) for v in str(spec).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"branching must be an int or a list like 3,2; got {spec!r}") \
            from None
    if not vals or any(v < 2 for v in vals):
        raise ConfigError(f"branching factors must be >= 2, got {spec!r}")
    return vals[0] if len(vals) == 1 else vals


def check(s: Settings) -> None:
    """Every check that needs no model: a bad setting fails before anything loads."""
    from vdiff.interpolation import pose_guidance, schemes

    if not (s.image_a and s.image_b):
        raise ConfigError("set image_a and image_b: the two images to interpolate between")
    if not s.out:
        raise ConfigError("no output folder: set out")
    if s.scheme not in schemes.SCHEMES:
        raise ConfigError(f"scheme must be one of {schemes.SCHEMES}, got {s.scheme!r}")
    if s.shape not in schemes.SHAPES:
        raise ConfigError(f"shape must be one of {schemes.SHAPES}, got {s.shape!r}")
    if s.control_profile not in pose_guidance.PROFILES:
        raise ConfigError(f"control_profile must be one of {pose_guidance.PROFILES}")
    if s.num_frames < 2:
        raise ConfigError(f"num_frames must be >= 2, got {s.num_frames}")
    if s.candidates < 1:
        raise ConfigError("candidates must be >= 1")
    if s.ddim_steps < 1:
        raise ConfigError("ddim_steps must be >= 1")
    if s.inversion_steps < 0:
        raise ConfigError("inversion_steps must be >= 0")
    if not 0.0 <= s.noise_min <= s.noise_max <= 1.0:
        raise ConfigError("need 0 <= noise_min <= noise_max <= 1")
    if bool(s.sd) == bool(s.dreampose_run):
        raise ConfigError("pass exactly one model: sd=DIFFUSERS_SD_FOLDER or "
                          "dreampose_run=DREAMPOSE_WORKDIR")
    if s.dreampose_run:
        _check_dreampose(s)
    else:
        pose = [s.keypoints_a, s.keypoints_b, s.controlnet]
        if any(pose) and not all(pose):
            raise ConfigError("pose guidance needs all of keypoints_a, keypoints_b and "
                              "controlnet")
        if s.controlnet and not os.path.isdir(s.controlnet):
            raise ConfigError(f"ControlNet folder not found: {s.controlnet}")
        if not os.path.isdir(s.sd):
            raise ConfigError(f"Stable Diffusion folder not found: {s.sd} (a diffusers "
                              "layout: unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    if s.clip and not os.path.isdir(s.clip):
        raise ConfigError(f"CLIP folder not found: {s.clip}")
    parse_branching(s.branching)
    if s.resize:
        parse_hw(s.resize)
    if s.dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {DTYPES}, got {s.dtype!r}")


def _check_dreampose(s: Settings) -> None:
    """A DreamPose run has no text encoder and takes pose natively: the text and ControlNet
    settings have nothing to act on, so they are errors rather than silently ignored."""
    from vdiff.interpolation import dreampose_backend

    text = {"prompt_a": s.prompt_a, "prompt_b": s.prompt_b, "negative": s.negative,
            "controlnet": s.controlnet, "inversion_steps": s.inversion_steps > 0}
    given = [k for k, v in text.items() if v]
    if given:
        raise ConfigError(f"{', '.join(given)}: for sd models only; a DreamPose run is "
                          "conditioned on the images themselves and on keypoints_a/_b")
    if not (s.keypoints_a and s.keypoints_b):
        raise ConfigError("dreampose_run needs keypoints_a and keypoints_b (OpenPose JSON of "
                          "the two images): the pose drives the DreamPose model")
    if s.clip and not s.rank_prompt:
        raise ConfigError("CLIP ranking with dreampose_run needs rank_prompt (there are no "
                          "prompts to rank against)")
    if s.context_interp not in dreampose_backend.CONTEXT_INTERP:
        raise ConfigError(f"context_interp must be one of {dreampose_backend.CONTEXT_INTERP}, "
                          f"got {s.context_interp!r}")
    if not os.path.isfile(os.path.join(s.dreampose_run, "config.json")):
        raise ConfigError(f"{s.dreampose_run} holds no DreamPose run (no config.json)")
