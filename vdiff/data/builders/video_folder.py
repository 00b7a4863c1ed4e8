"""Any directory of videos as a dataset, without TensorFlow.

A video is a file (mp4, avi, webm, mov, mkv, gif) or a folder of frame images
(png/jpg, in name order). Splits: `train/` and `test/` sub-folders if the root
has them, otherwise every video goes to `train` except a deterministic
`test_fraction` chosen by a hash of its path. With `labels_from_subfolders`, the
first folder level under the split root names the class (sorted names → 0..N−1);
otherwise every label is 0.

    MANUAL_DIR/[train/|test/][ClassName/]clip.mp4
    MANUAL_DIR/[train/|test/][ClassName/]clip_as_frames/000.png ...
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

from vdiff.data import video_io
from vdiff.data.builders.video_base import SourceFile, VideoBuilderConfig, VideoDatasetBuilder


LAYOUT = "    MANUAL_DIR/" + __doc__.split("MANUAL_DIR/", 1)[1].rstrip()


@dataclasses.dataclass
class VideoFolderConfig(VideoBuilderConfig):
    labels_from_subfolders: bool = False
    test_fraction: float = 0.05


def make_config(name: str, *, resolution: int, labels_from_subfolders: bool = False,
                test_fraction: float = 0.05) -> VideoFolderConfig:
    """A config named `<name>_res<R>` (the dataset's directory under the data dir)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "videos"
    return VideoFolderConfig(name=f"{safe}_res{resolution}", resolution=resolution,
                             labels_from_subfolders=labels_from_subfolders,
                             test_fraction=test_fraction,
                             description=f"videos from a folder, {resolution}px")


def _is_frame_folder(path: str, names: list[str]) -> bool:
    return any(n.lower().endswith(video_io.IMAGE_EXTENSIONS) for n in names) and not any(
        os.path.isdir(os.path.join(path, n)) for n in names)


def find_videos(root: str) -> list[str]:
    """Paths of video files and frame folders under root (sorted, relative)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(video_io.VIDEO_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
        for name in list(dirnames):
            sub = os.path.join(dirpath, name)
            if _is_frame_folder(sub, os.listdir(sub)):
                found.append(os.path.relpath(sub, root))
                dirnames.remove(name)  # its images are frames, not videos
    return sorted(found)


def _in_test(key: str, fraction: float) -> bool:
    digest = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < fraction


class VideoFolder(VideoDatasetBuilder):
    """Videos from a user directory (see module doc for the layout)."""

    # User configs come from make_config ('<name>_res<R>'), which can never be "default".
    BUILDER_CONFIGS = [VideoFolderConfig(name="default", resolution=64)]
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the directory of your videos as the manual dir:\n" + LAYOUT

    def list_source_files(self, manual_dir: str):
        c = self.builder_config
        split_roots = {s: os.path.join(manual_dir, s) for s in ("train", "test")}
        if os.path.isdir(split_roots["train"]):
            items = [(s, rel) for s, root in split_roots.items() if os.path.isdir(root)
                     for rel in find_videos(root)]
        else:
            items = [("test" if _in_test(rel, c.test_fraction) else "train", rel)
                     for rel in find_videos(manual_dir)]
        if not items:
            raise FileNotFoundError(
                f"no videos found in {manual_dir} (looked for "
                f"{', '.join(video_io.VIDEO_EXTENSIONS)} files and folders of frame images)")
        class_of = {}
        if c.labels_from_subfolders:
            for split, rel in items:
                parts = rel.split(os.sep)
                if len(parts) < 2:
                    raise FileNotFoundError(
                        f"labels_from_subfolders: {rel} is not inside a class folder; put "
                        f"every video in <root>/[train|test/]<ClassName>/")
                class_of[(split, rel)] = parts[0]
        classes = sorted(set(class_of.values()))
        index = {name: i for i, name in enumerate(classes)}
        files = []
        for split, rel in items:
            has_split_dir = os.path.isdir(split_roots["train"])
            path = os.path.join(split_roots[split] if has_split_dir else manual_dir, rel)
            key = os.path.join(split, rel) if has_split_dir else rel
            label = index[class_of[(split, rel)]] if classes else 0
            files.append(SourceFile(path=path, key=key, label=label, split=split))
        return files, classes
