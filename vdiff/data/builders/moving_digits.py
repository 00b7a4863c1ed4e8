"""TF-free tfds builder for moving digits, written as ArrayRecord.

No TensorFlow and no network: features are plain `tfds.features.Tensor`s, the
examples come from `vdiff.data.moving_digits`, and `DatasetInfo` is built
directly (tfds' `dataset_info_from_configs` would look for metadata files
next to the module).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from vdiff import progress
from vdiff.data import moving_digits

MAX_DIGITS = 2


@dataclasses.dataclass
class MovingDigitsConfig(tfds.core.BuilderConfig):
    num_train: int = 2000
    num_test: int = 200
    num_frames: int = 16
    size: int = 64
    digit_size: int = 24
    seed: int = 0
    min_speed: float = 2.0  # pixels per frame at `size`
    max_speed: float = 4.0


class MovingDigits(tfds.core.GeneratorBasedBuilder):
    """1–2 of scikit-learn's handwritten digits bouncing in 64×64 frames."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        MovingDigitsConfig(name="default", description="2000 train / 200 test, 16 frames"),
        # The default's videos plus 13,000 more (same test split): for models that overfit
        # 2,000 fixed videos (PVDM's latent model, docs/results.md). About 1 GB serialized, which
        # the build holds in memory (builders/tfds_build.py).
        MovingDigitsConfig(name="large", description="15000 train / 200 test, 16 frames",
                           num_train=15000),
        # The default's digits, placed as in the default, that do not move: separates what a
        # video model gets wrong about moving content from what it gets wrong about digits
        # (PVDM's triplane latents, docs/methods/pvdm.md).
        MovingDigitsConfig(name="static", description="2000 train / 200 test, 16 frames, "
                           "digits at rest", min_speed=0.0, max_speed=0.0),
        # Reference clips for the stated FVD protocol (vdiff/eval/protocol.py): 2,048 test
        # videos of the held-out digit images; the first 200 are the default's test videos.
        MovingDigitsConfig(name="heldout_2k", description="16 train / 2048 test, 16 frames "
                           "(FVD reference clips)", num_train=16, num_test=2048),
        MovingDigitsConfig(name="tiny", description="64 train / 16 test, 8 frames (tests)",
                           num_train=64, num_test=16, num_frames=8),
    ]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description="Moving digits: Moving-MNIST-style videos of scikit-learn's 8x8 digits.",
            # Keep generation order, so record i is make_video(i): the pipeline shuffles.
            disable_shuffling=True,
            features=tfds.features.FeaturesDict({
                "video": tfds.features.Tensor(shape=(c.num_frames, c.size, c.size, 1),
                                              dtype=np.uint8),
                "label": tfds.features.Tensor(shape=(), dtype=np.int32),
                "labels": tfds.features.Tensor(shape=(MAX_DIGITS,), dtype=np.int32),
                "num_digits": tfds.features.Tensor(shape=(), dtype=np.int32),
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        c = self.builder_config
        return {"train": self._generate_examples("train", c.num_train),
                "test": self._generate_examples("test", c.num_test)}

    def _generate_examples(self, split: str, count: int):
        c = self.builder_config
        for index in progress.track(range(count), f"moving digits {c.name}: {split} videos",
                                    unit="videos"):
            video, labels = moving_digits.make_video(
                index, seed=c.seed, num_frames=c.num_frames, size=c.size,
                digit_size=c.digit_size, max_digits=MAX_DIGITS, split=split,
                min_speed=c.min_speed, max_speed=c.max_speed)
            yield index, {"video": video, "label": labels[0], "labels": labels,
                          "num_digits": np.int32((labels >= 0).sum())}
