"""UCF-101 from a local copy of the official release, without TensorFlow or network.

Expected manual dir (the extracted `UCF101.rar` and `UCF101TrainTestSplits-RecognitionTask.zip`):

    MANUAL_DIR/
      UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi ...   (class sub-folders, or flat)
      ucfTrainTestlist/classInd.txt                             ("1 ApplyEyeMakeup" ...)
      ucfTrainTestlist/trainlist0{1,2,3}.txt                    ("ApplyEyeMakeup/v_..._c01.avi 1")
      ucfTrainTestlist/testlist0{1,2,3}.txt                     ("ApplyEyeMakeup/v_..._c01.avi")

Configs `res{64,128,256}_split{1,2,3}`: frames resized (shorter side) and
center-cropped to R×R, stored as JPEG; labels are 0-based indices into
classInd.txt. Class names are matched case-insensitively, because the release
spells one class two ways (folder `HandstandPushups`, files `v_HandStandPushups_*`).
"""

from __future__ import annotations

import dataclasses
import os

from vdiff.data.builders.video_base import SourceFile, VideoBuilderConfig, VideoDatasetBuilder
from vdiff.errors import InputError

LAYOUT = "    MANUAL_DIR/" + __doc__.split("MANUAL_DIR/")[1].split("Configs")[0].rstrip()


@dataclasses.dataclass
class UCF101Config(VideoBuilderConfig):
    split_number: int = 1


def config_name(resolution: int, split: int) -> str:
    return f"res{resolution}_split{split}"


def _configs() -> list[UCF101Config]:
    return [UCF101Config(name=config_name(r, s), resolution=r, split_number=s,
                         description=f"{r}x{r} frames, official split {s}")
            for r in (64, 128, 256) for s in (1, 2, 3)]


def _layout_error(manual_dir: str, problem: str) -> FileNotFoundError:
    return FileNotFoundError(f"UCF-101 manual dir {manual_dir}: {problem}. Expected layout:\n"
                             f"{LAYOUT}")


def read_class_index(path: str) -> list[str]:
    """classInd.txt → class names ordered by their 1-based index."""
    entries = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                index, name = line.split()
                entries[int(index)] = name
    if sorted(entries) != list(range(1, len(entries) + 1)):
        raise InputError(f"{path}: class indices are not 1..N")
    return [entries[i] for i in range(1, len(entries) + 1)]


def read_split_list(path: str) -> list[str]:
    """trainlist/testlist → relative paths (a trailing label column is ignored)."""
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


class UCF101(VideoDatasetBuilder):
    """UCF-101 human actions (101 classes, 13,320 clips at 25 fps), from a local copy."""

    name = "ucf101"

    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = config_name(64, 1)
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip from the UCF "
        "CRCV site, extract both into one directory and pass it as the manual dir:\n" + LAYOUT)

    def list_source_files(self, manual_dir: str):
        videos = os.path.join(manual_dir, "UCF-101")
        lists = os.path.join(manual_dir, "ucfTrainTestlist")
        if not os.path.isdir(videos):
            raise _layout_error(manual_dir, "no UCF-101/ folder of .avi files")
        split = self.builder_config.split_number
        needed = ["classInd.txt", f"trainlist0{split}.txt", f"testlist0{split}.txt"]
        missing = [n for n in needed if not os.path.isfile(os.path.join(lists, n))]
        if missing:
            raise _layout_error(manual_dir, f"missing ucfTrainTestlist/{', '.join(missing)}")
        classes = read_class_index(os.path.join(lists, "classInd.txt"))
        by_lower = {name.lower(): i for i, name in enumerate(classes)}
        files = []
        for split_name, list_name in (("train", needed[1]), ("test", needed[2])):
            for entry in read_split_list(os.path.join(lists, list_name)):
                folder, name = os.path.split(entry)
                # The class comes from the list's folder; for flat lists from v_<Class>_gXX_cXX.
                class_name = folder or name[2:].rsplit("_", 2)[0]
                if class_name.lower() not in by_lower:
                    raise _layout_error(manual_dir, f"{list_name} names class {class_name!r}, "
                                                    f"which is not in classInd.txt")
                candidates = [os.path.join(videos, entry), os.path.join(videos, name)]
                path = next((p for p in candidates if os.path.exists(p)), candidates[0])
                files.append(SourceFile(path=path, key=entry, label=by_lower[class_name.lower()],
                                        split=split_name))
        return files, classes
