"""Small fake video datasets written by the tests: a UCF-101 layout and folders of videos."""

from __future__ import annotations

import os

import numpy as np

from vdiff.data import video_io

UCF_CLASSES = ("ApplyEyeMakeup", "Basketball", "HandstandPushups")


def class_video(label: int, index: int, *, num_frames: int, size=(48, 64)) -> np.ndarray:
    """A moving pattern whose base colour encodes the class: uint8 [T, H, W, 3]."""
    h, w = size
    y, x = np.mgrid[:h, :w]
    colour = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])[label % 3]
    frames = []
    for t in range(num_frames):
        stripe = ((x + 3 * t + 7 * index) // 8) % 2
        frames.append(colour[None, None] * (0.5 + 0.5 * stripe[..., None]))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def make_fake_ucf(root: str, *, per_class: int = 4, num_frames: int = 20) -> dict:
    """UCF-101-shaped tree: 3 classes × per_class clips, split files for split 1, plus a
    corrupt (truncated) file and a too-short file that are listed in trainlist01.txt."""
    videos = os.path.join(root, "UCF-101")
    lists = os.path.join(root, "ucfTrainTestlist")
    os.makedirs(lists, exist_ok=True)
    train, test = [], []
    for label, name in enumerate(UCF_CLASSES):
        os.makedirs(os.path.join(videos, name), exist_ok=True)
        # The release's quirk: folder HandstandPushups, files v_HandStandPushups_*.
        file_class = "HandStandPushups" if name == "HandstandPushups" else name
        for g in range(per_class):
            rel = f"{name}/v_{file_class}_g{g + 1:02d}_c01.avi"
            video_io.write_video(os.path.join(videos, rel),
                                 class_video(label, g, num_frames=num_frames), fps=25)
            (test if g == 0 else train).append((rel, label + 1))
    # Bad files, listed in the train split.
    good = os.path.join(videos, train[0][0])
    corrupt = "Basketball/v_Basketball_g90_c01.avi"
    with open(good, "rb") as f:
        data = f.read()
    with open(os.path.join(videos, corrupt), "wb") as f:
        f.write(data[: len(data) // 2])
    short = "Basketball/v_Basketball_g91_c01.avi"
    video_io.write_video(os.path.join(videos, short), class_video(1, 9, num_frames=3), fps=25)
    empty = "Basketball/v_Basketball_g92_c01.avi"
    open(os.path.join(videos, empty), "wb").close()
    train += [(corrupt, 2), (short, 2), (empty, 2)]
    with open(os.path.join(lists, "classInd.txt"), "w") as f:
        f.writelines(f"{i + 1} {n}\n" for i, n in enumerate(UCF_CLASSES))
    with open(os.path.join(lists, "trainlist01.txt"), "w") as f:
        f.writelines(f"{rel} {lab}\n" for rel, lab in train)
    with open(os.path.join(lists, "testlist01.txt"), "w") as f:
        f.writelines(f"{rel}\n" for rel, _ in test)
    return {"train": [r for r, _ in train], "test": [r for r, _ in test],
            "bad": {corrupt: "decoder error", short: "too short", empty: "zero-byte"}}
