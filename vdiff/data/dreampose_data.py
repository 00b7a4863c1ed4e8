"""In-memory data for DreamPose's stages (synthetic people or a folder of pose videos).

The shared grain pipeline (`vdiff.data.pipeline`) serves clip datasets; DreamPose trains
on (subject image, pose window, target frame) triples and on a handful of subject photos,
small enough to hold in memory. The samplers below draw one example (float32 in [−1, 1]);
`vdiff.data.sampled_batches.SampledBatches` stacks them into host-local batches whose
position is just the batch index (checkpointable as JSON like grain's iterators).

Sources (`data.name`):
  'synthetic_people'  `synthetic_people.make_triples(num_subjects + 1, …)`: subjects
                      0..N−1 are the dataset, subject N is the held-out demo subject.
  'pose_videos'       data.source_dir/<video>/frames/*.png|jpg and <video>/poses/ with either
                      OpenPose JSON files (rendered by `pose.render_pose_uv`) or DensePose IUV
                      images (`pose.load_densepose_iuv`).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from vdiff.data import pose as pose_lib
from vdiff.errors import ConfigError
from vdiff.core.pixels import to_unit_range


@functools.lru_cache(maxsize=4)
def synthetic(num_subjects: int, frames: int, size: int, seed: int) -> dict[str, np.ndarray]:
    from vdiff.data.synthetic_people import make_triples

    return make_triples(num_subjects, frames, size, seed)


def load_pose_folder(path: str, size: int, *, num_frames: int | None = None) -> np.ndarray:
    """[T, size, size, 2] pose maps from a folder/file of OpenPose JSON, or IUV images.
    JSON keypoints are taken to be in pixels of a `size` × `size` image."""
    if not os.path.exists(path):
        raise pose_lib.PoseFileError(f"no such pose file or folder: {path}")
    is_json = path.lower().endswith(".json") or (
        os.path.isdir(path) and any(n.lower().endswith(".json") for n in os.listdir(path)))
    if is_json:
        kps = pose_lib.load_keypoint_sequence(path)
        maps = pose_lib.render_pose_uv(kps, size)
    else:
        maps = pose_lib.load_densepose_iuv(path, size)
    return maps[:num_frames] if num_frames else maps


def load_pose_videos(root: str, size: int) -> dict[str, list[np.ndarray]]:
    from vdiff.data import video_io

    if not root or not os.path.isdir(root):
        raise ConfigError(f"data.source_dir={root!r}: expected a folder of <video>/frames/ "
                          "and <video>/poses/ sub-folders")
    frames, poses = [], []
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.isdir(os.path.join(d, "frames")):
            continue
        f = video_io.read_frame_folder(os.path.join(d, "frames"), resolution=size)
        p = load_pose_folder(os.path.join(d, "poses"), size)
        n = min(len(f), len(p))
        frames.append(to_unit_range(f[:n]))
        poses.append(p[:n])
    if not frames:
        raise ConfigError(f"{root} holds no <video>/frames/ folders")
    return {"frames": frames, "poses": poses}


def random_crop_resize(rng: np.random.Generator, images: list[np.ndarray], min_fraction: float,
                       nearest: tuple[bool, ...]) -> list[np.ndarray]:
    """One random square crop (side ∈ [min_fraction, 1] of the image) of every array, resized
    back (bilinear, or nearest where `nearest`), the same crop for all."""
    h, w = images[0].shape[:2]
    if min_fraction >= 1:
        return images
    side = int(round(min(h, w) * rng.uniform(min_fraction, 1.0)))
    y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    out = []
    for img, near in zip(images, nearest):
        crop = img[y:y + side, x:x + side]
        rows = (np.arange(h) + 0.5) * side / h - 0.5
        cols = (np.arange(w) + 0.5) * side / w - 0.5
        if near:
            r = np.clip(np.rint(rows), 0, side - 1).astype(int)
            c = np.clip(np.rint(cols), 0, side - 1).astype(int)
            out.append(crop[r][:, c])
            continue
        r0 = np.clip(np.floor(rows), 0, side - 1).astype(int)
        c0 = np.clip(np.floor(cols), 0, side - 1).astype(int)
        r1, c1 = np.minimum(r0 + 1, side - 1), np.minimum(c0 + 1, side - 1)
        fr = np.clip(rows - r0, 0, 1)[:, None, None]
        fc = np.clip(cols - c0, 0, 1)[None, :, None]
        top = crop[r0][:, c0] * (1 - fc) + crop[r0][:, c1] * fc
        bot = crop[r1][:, c0] * (1 - fc) + crop[r1][:, c1] * fc
        out.append((top * (1 - fr) + bot * fr).astype(np.float32))
    return out


# ------------------------------------------------------------------------ stage samplers


def dataset_videos(data: Any) -> dict[str, list[np.ndarray]]:
    """{'frames': [T,H,W,3] per video, 'poses': [T,H,W,2] per video} of the dataset stage."""
    if data.name == "synthetic_people":
        s = synthetic(int(data.num_subjects) + 1, int(data.num_frames), int(data.resolution),
                      int(data.synthetic_seed))
        n = int(data.num_subjects)
        return {"frames": list(s["frames"][:n]), "poses": list(s["poses"][:n])}
    if data.name == "pose_videos":
        return load_pose_videos(data.source_dir, int(data.resolution))
    raise ConfigError(f"DreamPose data.name {data.name!r}: use 'synthetic_people' or "
                      "'pose_videos'")


def subject_photos(data: Any) -> dict[str, np.ndarray]:
    """The subject stage's photos [K, H, W, 3] and their pose maps [K, H, W, 2].

    synthetic_people: the held-out subject's first `num_subject_photos` frames.
    pose_videos / photos: data.subject_dir with frames/ and poses/ like one pose video."""
    k = int(data.num_subject_photos)
    if data.name == "synthetic_people":
        s = synthetic(int(data.num_subjects) + 1, int(data.num_frames), int(data.resolution),
                      int(data.synthetic_seed))
        n = int(data.num_subjects)
        return {"frames": s["frames"][n, :k], "poses": s["poses"][n, :k]}
    d = data.subject_dir
    if not d or not os.path.isdir(os.path.join(d, "frames")):
        raise ConfigError(f"data.subject_dir={d!r}: expected frames/ and poses/ of the subject")
    from vdiff.data import video_io

    frames = video_io.read_frame_folder(os.path.join(d, "frames"),
                                        resolution=int(data.resolution))
    poses = load_pose_folder(os.path.join(d, "poses"), int(data.resolution))
    n = min(len(frames), len(poses), k or len(frames))
    return {"frames": to_unit_range(frames[:n]), "poses": poses[:n]}


def dataset_sampler(data: Any):
    vids = dataset_videos(data)

    def sample(rng: np.random.Generator) -> dict[str, np.ndarray]:
        v = int(rng.integers(len(vids["frames"])))
        frames, poses = vids["frames"][v], vids["poses"][v]
        t, s = int(rng.integers(len(frames))), int(rng.integers(len(frames)))
        pose = pose_lib.pose_window(poses, t)
        frame, pose = random_crop_resize(rng, [frames[t], pose], float(data.crop_min),
                                         (False, True))
        return {"subject_image": frames[s], "pose": pose, "frame": frame}

    return sample


def subject_sampler(data: Any):
    """Pairs of subject photos: condition photo i, target photo j with its pose repeated
    over the 5-frame window (photos are not a sequence), random crops of the target."""
    photos = subject_photos(data)

    def sample(rng: np.random.Generator) -> dict[str, np.ndarray]:
        n = len(photos["frames"])
        i, j = int(rng.integers(n)), int(rng.integers(n))
        pose = np.concatenate([photos["poses"][j]] * 5, axis=-1)
        frame, pose = random_crop_resize(rng, [photos["frames"][j], pose],
                                         float(data.crop_min), (False, True))
        return {"subject_image": photos["frames"][i], "pose": pose, "frame": frame}

    return sample


def vae_sampler(data: Any, *, subject: bool):
    """Images for the VAE stages: subject photos (decoder finetune) or dataset frames."""
    if subject:
        images = subject_photos(data)["frames"]
    else:
        images = np.concatenate(dataset_videos(data)["frames"])

    def sample(rng: np.random.Generator) -> dict[str, np.ndarray]:
        img = images[int(rng.integers(len(images)))]
        (img,) = random_crop_resize(rng, [img], float(data.crop_min), (False,))
        if rng.random() < 0.5 and not subject:
            img = img[:, ::-1]
        return {"image": np.ascontiguousarray(img)}

    return sample
