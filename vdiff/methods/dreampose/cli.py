"""Animate one photo with a pose sequence using a finetuned DreamPose run.

    python -m vdiff.dreampose_cli --workdir=W_VAE --image=photo.png --poses=DIR_OR_JSON \
        --out=video.mp4 [--s_image=2 --s_pose=4 --num_steps=25 --sampler=ddim \
        --shared_noise --seed=0]

--workdir: a DreamPose run (best: the VAE-decoder run, whose checkpoint is the complete
final model; a subject or dataset run works too). --poses: a folder of per-frame OpenPose
JSON files or one JSON sequence (keypoints in pixels of the photo, rendered with
`pose.render_pose_uv`), or a folder of DensePose IUV images. The photo must be square at
the model's resolution (pass --resize to scale it; keypoints are then scaled with it).
Frames are sampled one by one with dual classifier-free guidance; writes an mp4 (a gif if
no ffmpeg is available) and prints the path.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

from vdiff import errors, progress
from vdiff.core.pixels import load_image, resize_image
from vdiff.data import pose as pose_lib
from vdiff.data import video_io
from vdiff.errors import ConfigError
from vdiff.methods.dreampose.animation import animate
from vdiff.methods.dreampose.runs import build_model, load_animation_config, load_run


def load_photo(path: str, resolution: int, *,
               resize: bool) -> tuple[np.ndarray, tuple[int, int]]:
    """[R, R, 3] float32 in [−1, 1] and the photo's original (H, W) (the keypoints' frame)."""
    img = load_image(path, flag="--image")
    h, w = img.shape[:2]
    if (h, w) != (resolution, resolution):
        if not resize:
            raise ConfigError(f"--image is {w}×{h} but the model works at {resolution}×"
                              f"{resolution}: crop/resize it first or pass --resize")
        img = resize_image(img, (resolution, resolution))
    return img, (h, w)


def load_poses(path: str, resolution: int, src_hw: tuple[int, int]) -> np.ndarray:
    """Pose maps [T, R, R, 2] from OpenPose JSON (keypoints in pixels of a `src_hw` photo,
    rescaled to R) or DensePose IUV images."""
    if not os.path.exists(path):
        raise ConfigError(f"--poses {path!r}: no such file or folder")
    is_json = path.lower().endswith(".json") or (
        os.path.isdir(path) and any(n.lower().endswith(".json") for n in os.listdir(path)))
    if is_json:
        kps = pose_lib.load_keypoint_sequence(path)
        if src_hw != (resolution, resolution):
            kps = pose_lib.normalize_keypoints(kps, src_hw, resolution)
        return pose_lib.render_pose_uv(kps, resolution)
    return pose_lib.load_densepose_iuv(path, resolution)


def run(workdir: str, image: str, poses: str, out: str, *, s_image: float = 2.0,
        s_pose: float = 4.0, num_steps: int = 25, sampler: str = "ddim",
        shared_noise: bool = False, seed: int = 0, resize: bool = False,
        max_frames: int = 0, fps: int = 8) -> str:
    """Animates `image` with `poses` by the DreamPose run in `workdir`; writes `out` (a gif
    beside it without ffmpeg) and returns the path written."""
    config = load_animation_config(workdir)  # cheap: check inputs before weights
    r = int(config.data.resolution)
    img, hw = load_photo(image, r, resize=resize)
    maps = load_poses(poses, r, hw)
    config, params = load_run(workdir)
    model = build_model(config)
    if max_frames:
        maps = maps[:max_frames]
    video = animate(model, params, img, maps, jax.random.key(seed),
                    s_image=s_image, s_pose=s_pose, num_steps=num_steps,
                    sampler=sampler, shared_noise=shared_noise)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    frames = video_io.to_uint8(video)
    try:
        video_io.write_video(out, frames, fps=fps)
    except video_io.FFmpegNotFoundError as e:
        out = os.path.splitext(out)[0] + ".gif"
        print(f"{e}; writing {out} instead", file=sys.stderr)
        video_io.write_video(out, frames, fps=fps)
    return out


@errors.cli
def main(argv=None) -> int:
    import argparse

    p = errors.ArgumentParser(prog="python -m vdiff.dreampose_cli", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--poses", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--s_image", type=float, default=2.0)
    p.add_argument("--s_pose", type=float, default=4.0)
    p.add_argument("--num_steps", type=int, default=25)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--shared_noise", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resize", action="store_true")
    p.add_argument("--max_frames", type=int, default=0)
    p.add_argument("--fps", type=int, default=8)
    a = p.parse_args(argv)
    progress.log_to_stderr()
    path = run(a.workdir, a.image, a.poses, a.out, s_image=a.s_image, s_pose=a.s_pose,
               num_steps=a.num_steps, sampler=a.sampler, shared_noise=a.shared_noise,
               seed=a.seed, resize=a.resize, max_frames=a.max_frames, fps=a.fps)
    print(path)
    return 0
