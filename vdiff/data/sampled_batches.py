"""Host-side batches drawn by a function, for methods whose training data is not a video
dataset read through the grain pipeline (DreamPose's photo/pose/frame triples, PVDM's
cached latents). Batch k is a pure function of (seed, k), so the iterator's whole state is
one integer and a resumed run continues the same stream."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class SampledBatches:
    """Infinite iterator of numpy batches: `sample_fn(rng)` draws one example (a dict of
    arrays) and a batch stacks `batch_size` of them; `get_state` / `set_state` are the
    trainer's checkpoint hooks."""

    def __init__(self, sample_fn: Callable[[np.random.Generator], dict[str, np.ndarray]],
                 batch_size: int, seed: int):
        self.sample_fn, self.batch_size, self.seed, self.index = sample_fn, batch_size, seed, 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.index])
        self.index += 1
        rows = [self.sample_fn(rng) for _ in range(self.batch_size)]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    def get_state(self) -> dict[str, int]:
        return {"index": self.index}

    def set_state(self, state: dict[str, int]) -> None:
        self.index = int(state["index"])
