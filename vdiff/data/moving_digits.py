"""Moving digits: Moving-MNIST-style videos from scikit-learn's bundled 8x8 digits.

scikit-learn ships 1,797 real handwritten digits, so this dataset needs no network.
Every video is a pure function of ``(seed, split, index)``: the train and test splits
draw from disjoint sets of digit images, so 'test' is truly held out.
"""

from __future__ import annotations

import functools

import numpy as np

SPLITS = ("train", "test")
TEST_FRACTION = 0.1
# Fixed seed of the train/test partition of the 1,797 digit images; changing it changes
# which digits are held out, so it is deliberately not a parameter.
_PARTITION_SEED = 20240101
_SPLIT_IDS = {"train": 0, "test": 1}


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """All sklearn digits as (images float32 [N, 8, 8] in [0, 1], labels int32 [N]), read-only."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (np.asarray(bunch.images, np.float32) / 16.0)
    labels = np.asarray(bunch.target, np.int32)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def num_digit_images() -> int:
    """Number of distinct digit images shipped with scikit-learn (1,797)."""
    return len(_digits()[1])


@functools.cache
def split_indices(split: str) -> np.ndarray:
    """Indices into the sklearn digits used by ``split``; train and test are disjoint."""
    _check_split(split)
    n = num_digit_images()
    perm = np.random.default_rng(_PARTITION_SEED).permutation(n)
    n_test = int(round(n * TEST_FRACTION))
    out = np.sort(perm[:n_test] if split == "test" else perm[n_test:])
    out.flags.writeable = False
    return out


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] linear-interpolation weights with half-pixel centres (like image resize)."""
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    centres = np.clip(centres, 0.0, n_in - 1.0)
    lo = np.floor(centres).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = centres - lo
    w = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    np.add.at(w, (rows, lo), 1.0 - frac)
    np.add.at(w, (rows, hi), frac)
    return w


def upscale(images: np.ndarray, size: int) -> np.ndarray:
    """Smoothly upscales float [N, h, w] images in [0, 1] to uint8 [N, size, size] in 0..255.

    Separable linear interpolation, applied twice with a 1-pixel zero border, so strokes
    have soft edges rather than 3x3 blocks.
    """
    images = np.pad(np.asarray(images, np.float64), ((0, 0), (1, 1), (1, 1)))
    h, w = images.shape[1:]
    wy, wx = _interp_matrix(h, size), _interp_matrix(w, size)
    out = np.einsum("yh,nhw,xw->nyx", wy, images, wx)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


@functools.cache
def _digit_bank(split: str, digit_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Upscaled digits of one split: (uint8 [M, d, d], labels int32 [M]), read-only."""
    images, labels = _digits()
    idx = split_indices(split)
    bank = upscale(images[idx], digit_size)
    bank.flags.writeable = False
    return bank, labels[idx]


# Digit-set classes: what a video shows, as one class id for class-conditional models. A
# video's digits {a} or {a, b} (order and position ignored) → lo·11 + hi with lo ≤ hi, where
# hi = 10 stands for "no second digit": one-digit videos of d are class 11·d + 10.
NO_DIGIT = 10
NUM_DIGIT_SET_CLASSES = 10 * 11


def digit_set_class(labels: np.ndarray) -> int:
    """Class id of a video's digit labels [max_digits] (unused slots −1; at most 2 digits)."""
    used = sorted(int(x) for x in np.asarray(labels).reshape(-1) if x >= 0)
    if not 1 <= len(used) <= 2 or not all(0 <= x <= 9 for x in used):
        raise ValueError(f"digit_set_class needs 1 or 2 digit labels in 0..9, got {labels}")
    lo, hi = used[0], used[1] if len(used) == 2 else NO_DIGIT
    return lo * 11 + hi


def one_digit_class(digit: int) -> int:
    """The digit-set class of videos showing `digit` alone."""
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be in 0..9, got {digit}")
    return digit * 11 + NO_DIGIT


def digits_of_class(cls: int) -> tuple[int, ...]:
    """The digits a digit-set class shows: (d,) or (lo, hi)."""
    if not 0 <= cls < NUM_DIGIT_SET_CLASSES:
        raise ValueError(f"digit-set class must be in [0, {NUM_DIGIT_SET_CLASSES}), got {cls}")
    lo, hi = divmod(int(cls), 11)
    return (lo,) if hi == NO_DIGIT else (lo, hi)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")


def bounce(start: float, velocity: float, num_steps: int, extent: float) -> np.ndarray:
    """Positions of a point moving in [0, extent] that reflects off both ends (float [T])."""
    pos = start + velocity * np.arange(num_steps, dtype=np.float64)
    if extent <= 0:
        return np.zeros(num_steps)
    period = 2.0 * extent
    pos = np.mod(pos, period)
    return np.where(pos > extent, period - pos, pos)


def make_video(
        index: int,
        *,
        seed: int,
        num_frames: int = 16,
        size: int = 64,
        digit_size: int = 24,
        max_digits: int = 2,
        split: str = "train",
        min_speed: float = 2.0,
        max_speed: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns one video ``uint8 [T, size, size, 1]`` and ``labels int32 [max_digits]``.

    1..max_digits digits (how many is drawn per video) bounce off the frame walls with
    random start positions and velocities; overlaps combine with max. Unused label slots
    are -1. Deterministic from (seed, split, index).
    """
    _check_split(split)
    if not 0 < digit_size <= size:
        raise ValueError(f"digit_size={digit_size} must be in (0, size={size}].")
    if max_digits < 1 or num_frames < 1 or index < 0:
        raise ValueError(f"Bad arguments: {max_digits=} {num_frames=} {index=}.")
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    bank, bank_labels = _digit_bank(split, digit_size)
    num_digits = int(rng.integers(1, max_digits + 1))
    video = np.zeros((num_frames, size, size), np.uint8)
    labels = np.full((max_digits,), -1, np.int32)
    extent = float(size - digit_size)
    for k in range(num_digits):
        choice = int(rng.integers(len(bank)))
        labels[k] = bank_labels[choice]
        start = rng.uniform(0.0, extent, size=2)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        speed = rng.uniform(min_speed, max_speed)
        ys = np.rint(bounce(start[0], speed * np.sin(angle), num_frames, extent)).astype(int)
        xs = np.rint(bounce(start[1], speed * np.cos(angle), num_frames, extent)).astype(int)
        for t, (y, x) in enumerate(zip(ys, xs)):
            patch = video[t, y : y + digit_size, x : x + digit_size]
            np.maximum(patch, bank[choice], out=patch)
    return video[..., None], labels
