"""Shared test utilities (not fixtures): configs and random batches."""

from __future__ import annotations

import importlib.util
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg: str | None = None):
    """Loads `configs/<name>.py` the way the CLI does and calls get_config(arg)."""
    path = os.path.join(REPO, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def random_batch(method, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A pipeline-shaped batch with random pixels and labels."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in method.example_batch(batch_size).items():
        if v.dtype == np.uint8:
            out[k] = rng.integers(0, 256, v.shape).astype(np.uint8)
        else:
            out[k] = rng.integers(0, max(method.num_classes, 1), v.shape).astype(v.dtype)
    return out
