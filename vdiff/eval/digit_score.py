"""How recognisable the digits in moving-digits frames are: a classifier's view.

FVD cannot tell clean 32×32 digit frames from speckled strokes (I3D sees them upscaled to
224 px; see docs/results.md, PVDM). This scores frames with a small classifier
trained here, on frames of one-digit moving-digits videos of the *train* digit images:

    confidence  mean over frames of max_y p(y | frame)
    score       exp(E_frames[KL(p(y | frame) ‖ p(y))])  (the Inception Score's form: high
                when each frame is confidently one digit and the digits vary; 1 … 10)

Both mean something only next to the same numbers for real frames (`reference`): frames
with two overlapping digits are ambiguous for real data too. The classifier is linear, so
it can be confident on inputs unlike any digit: uniform noise gets confidence ≈ 0.7 and a
score ≈ 2.6, against ≈ 0.9 and ≈ 7 for real one-digit frames. Read the two together.

    python -m vdiff.eval.digit_score samples.npz [--resolution 32]
"""

from __future__ import annotations

import functools
import json
import os
import sys
import zipfile
from typing import Any

import numpy as np

from vdiff import errors
from vdiff.data import moving_digits
from vdiff.errors import InputError


def _frames(num_videos: int, *, split: str, resolution: int, max_digits: int, seed: int,
            size: int = 64, digit_size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames [N·T, r, r] (block-averaged from `size`) and the first digit's label."""
    frames, labels = [], []
    f = size // resolution
    for i in range(num_videos):
        video, lab = moving_digits.make_video(i, seed=seed, split=split, size=size,
                                              digit_size=digit_size, max_digits=max_digits)
        v = video[..., 0].astype(np.float32)
        v = v.reshape(len(v), resolution, f, resolution, f).mean(axis=(2, 4))
        frames.append(v)
        labels.append(np.full(len(v), lab[0]))
    return np.concatenate(frames), np.concatenate(labels)


def centred_crops(frames: np.ndarray, window: int) -> np.ndarray:
    """float [N, window²]: a window×window crop of each [N, r, r] frame centred on its
    intensity centre of mass (zero padding), scaled to [0, 1]: the classifier then does not
    have to learn where the digit is."""
    x = np.asarray(frames, np.float32) / 255.0
    n, r = len(x), x.shape[-1]
    half = window // 2
    padded = np.pad(x, ((0, 0), (half, half), (half, half)))
    grid = np.arange(r, dtype=np.float32)
    mass = x.sum(axis=(1, 2)) + 1e-6
    cy = np.rint((x.sum(axis=2) @ grid) / mass).astype(int)
    cx = np.rint((x.sum(axis=1) @ grid) / mass).astype(int)
    out = np.stack([padded[i, cy[i]:cy[i] + window, cx[i]:cx[i] + window] for i in range(n)])
    return out.reshape(n, -1)


@functools.lru_cache(maxsize=4)
def classifier(resolution: int = 32, num_videos: int = 400, seed: int = 0) -> Any:
    """A multinomial logistic regression on one-digit frames (train digit images),
    cached per resolution."""
    from sklearn.linear_model import LogisticRegression

    x, y = _frames(num_videos, split="train", resolution=resolution, max_digits=1, seed=seed)
    clf = LogisticRegression(max_iter=500, C=1.0)
    clf.fit(centred_crops(x, _window(resolution)), y)
    return clf


def _window(resolution: int) -> int:
    return max(resolution * 24 // 64 + 2, 4)  # the digit's size at this resolution, + margin


def score(frames: np.ndarray, clf: Any) -> dict[str, float]:
    """frames: uint8 [..., r, r] or [..., r, r, 1] → {'confidence', 'score'}."""
    x = np.asarray(frames)
    if x.shape[-1] == 1:
        x = x[..., 0]
    x = x.reshape(-1, x.shape[-2], x.shape[-1])
    p = clf.predict_proba(centred_crops(x, _window(x.shape[-1])))
    marginal = p.mean(axis=0, keepdims=True)
    kl = np.sum(p * (np.log(p + 1e-12) - np.log(marginal + 1e-12)), axis=1)
    return {"confidence": float(p.max(axis=1).mean()), "score": float(np.exp(kl.mean()))}


def accuracy(videos: np.ndarray, digits: np.ndarray, clf: Any) -> float:
    """Fraction of the frames of uint8 videos [N, T, r, r(, 1)] that the classifier reads
    as their video's digit (digits: int [N]); for videos asked to show one digit."""
    x = np.asarray(videos)
    if x.shape[-1] == 1:
        x = x[..., 0]
    n, t = x.shape[:2]
    predicted = clf.predict(centred_crops(x.reshape(n * t, *x.shape[2:]), _window(x.shape[-1])))
    return float(np.mean(predicted == np.repeat(np.asarray(digits), t)))


def one_digit_accuracy(videos: np.ndarray, classes: Any, clf: Any) -> float | None:
    """`accuracy` over the videos asked to show one digit alone: `classes` are their
    digit-set classes (`moving_digits.digits_of_class`); None when no video is one digit."""
    asked = [moving_digits.digits_of_class(int(c)) for c in np.asarray(classes)]
    alone = [i for i, d in enumerate(asked) if len(d) == 1]
    if not alone:
        return None
    return accuracy(np.asarray(videos)[alone], np.asarray([asked[i][0] for i in alone]), clf)


def reference_accuracy(clf: Any, *, resolution: int = 32, num_videos: int = 128) -> float:
    """`accuracy` on real one-digit frames of the held-out (test) digit images."""
    x, y = _frames(num_videos, split="test", resolution=resolution, max_digits=1, seed=1)
    return float(np.mean(clf.predict(centred_crops(np.rint(x), _window(resolution))) == y))


def reference(clf: Any, *, resolution: int = 32, num_videos: int = 128,
              max_digits: int = 2) -> dict[str, float]:
    """The same numbers on real held-out frames (test digit images), as the dataset draws
    them (1 or 2 digits per video)."""
    x, _ = _frames(num_videos, split="test", resolution=resolution, max_digits=max_digits,
                   seed=1)
    return score(np.rint(x).astype(np.uint8), clf)


def load_videos(path: str, resolution: int) -> np.ndarray:
    """uint8 [N, T, r, r, 1] from an .npz's `videos` array; InputError naming what is wrong."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            videos = f["videos"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"could not read a 'videos' array from {path}: "
                         f"{type(e).__name__}: {e}") from None
    if videos.ndim != 5 or videos.shape[2:] != (resolution, resolution, 1):
        raise InputError(f"{path}: videos must be grey [N, T, {resolution}, {resolution}, 1] "
                         f"(--resolution={resolution}), got shape {videos.shape}")
    return videos


@errors.cli
def main(argv: list[str] | None = None) -> int:
    parser = errors.ArgumentParser(prog="python -m vdiff.eval.digit_score",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("videos", help=".npz with a 'videos' array, uint8 [N, T, r, r, 1]")
    parser.add_argument("--resolution", type=int, default=32)
    args = parser.parse_args(argv)
    videos = load_videos(args.videos, args.resolution)
    clf = classifier(args.resolution)
    out = {"generated": score(videos, clf),
           "real_reference": reference(clf, resolution=args.resolution)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
