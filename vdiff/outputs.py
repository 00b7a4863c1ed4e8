"""Where samples go and how they are written, for the trainer and every sampling application.

A sampling run writes to `WORKDIR/samples/<name>/`, the name saying what made the samples
(`sample_dir_name`), with `-1`, `-2`, … appended when that folder is already there
(`unique_output_dir`): comparing samplers, seeds or labels never overwrites earlier
outputs. An explicit --output_dir is used as given.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np

from vdiff.data import video_io


def sample_dir_name(application: str, *, step: int, seed: int, sampler: str = "",
                    num_steps: int = 0, guidance_scale: float = 0.0, num_classes: int = 0,
                    label: int = -1) -> str:
    """E.g. `unconditional_step1000_dpmpp_2m-25_seed0` or `classcond_step1000_ddim-64_w2_seed0_
    label3`. A class-conditional model's free samples are `classcond` (not `unconditional`),
    and without --label they say `classes` (the labels cycle through the classes)."""
    if application == "unconditional" and num_classes:
        application = "classcond"
    parts = [application, f"step{step}"]
    if sampler:
        parts.append(f"{sampler}-{num_steps}")
    if guidance_scale:
        parts.append(f"w{guidance_scale:g}")
    parts.append(f"seed{seed}")
    if num_classes:
        parts.append(f"label{label}" if label >= 0 else "classes")
    return "_".join(parts)


def unique_output_dir(path: str) -> str:
    """Creates and returns `path`, or `path-1`, `path-2`, … if it exists.

    Claimed with `os.makedirs` (which fails on an existing folder), so two processes
    sampling at once get different folders.
    """
    candidate, n = path, 0
    while True:
        try:
            os.makedirs(candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = f"{path}-{n}"


def write_videos(videos: np.ndarray, directory: str, *, fps: int, info: dict | None = None,
                 formats: tuple[str, ...] = ("mp4", "gif")) -> list[str]:
    """Writes float videos [N, T, H, W, C] in [−1, 1]: `sample_NN.<format>` per video, a PNG
    grid (rows = videos, columns = frames), `samples.npz` (uint8) and `info.json`.

    Without an ffmpeg binary an mp4 is skipped when a gif is written anyway, else written as a
    gif instead: neither training nor sampling should stop over a missing encoder.
    Returns the video paths and the grid.
    """
    os.makedirs(directory, exist_ok=True)
    frames = video_io.to_uint8(videos)
    paths = []
    for i, video in enumerate(frames):
        for ext in formats:
            path = os.path.join(directory, f"sample_{i:02d}.{ext}")
            try:
                video_io.write_video(path, video, fps=fps)
            except video_io.FFmpegNotFoundError as e:
                if "gif" in formats:
                    logging.warning("%s: skipped %s", e, os.path.basename(path))
                    continue
                path = os.path.splitext(path)[0] + ".gif"
                logging.warning("%s; writing %s instead", e, os.path.basename(path))
                video_io.write_video(path, video, fps=fps)
            paths.append(path)
    grid = os.path.join(directory, "grid.png")
    video_io.write_grid_png(grid, frames)
    np.savez_compressed(os.path.join(directory, "samples.npz"), videos=frames)
    if info is not None:
        with open(os.path.join(directory, "info.json"), "w") as f:
            json.dump(info, f, indent=2, default=_jsonable)
    return paths + [grid]


def _jsonable(x: Any) -> Any:
    """numpy scalars and arrays in info dicts."""
    return x.tolist() if hasattr(x, "tolist") else str(x)
