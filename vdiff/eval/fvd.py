"""Fréchet Video Distance (Unterthiner et al. 2018, arXiv 1812.01717).

FVD is the Fréchet distance between Gaussians fitted to I3D features (the 400 Kinetics
logits, see `vdiff.eval.i3d`) of two sets of videos:

    d² = ‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr (Σ_a Σ_b)^{1/2},

with unbiased covariances (1/(N−1)) in float64. The trace of the matrix square root uses
    tr (Σ_a Σ_b)^{1/2} = tr (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2} = Σ_i √λ_i,
the λ_i being eigenvalues of a symmetric PSD matrix: no complex square roots, and
singular covariances (fewer videos than feature dimensions) are fine; tiny negative
eigenvalues from round-off are clipped to 0.

  python -m vdiff.eval.fvd A B [--num_frames 16] [--batch_size 32] [--max_videos N]

A and B are folders of videos or `.npz` files (see `vdiff.eval.video_files`); every video
is clipped to its first `num_frames` frames. Prints JSON
{"fvd", "num_videos_a", "num_videos_b", "num_frames"}. On a GPU/TPU the batch is sharded
over all local devices.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import numpy as np
from jax.sharding import Mesh

from vdiff import errors, progress
from vdiff.errors import ConfigError, InputError
from vdiff.eval import i3d

DEFAULT_NUM_FRAMES = 16


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (float64) of features [N, D], N ≥ 2."""
    feats = np.asarray(feats, np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"need features [N, D] with N ≥ 2, got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False, ddof=1)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix: V diag(√max(w, 0)) Vᵀ."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    """tr (Σ_a Σ_b)^{1/2} = Σ √eig(Σ_a^{1/2} Σ_b Σ_a^{1/2}) for PSD Σ_a, Σ_b."""
    root = _psd_sqrt(np.asarray(sigma_a, np.float64))
    m = root @ np.asarray(sigma_b, np.float64) @ root
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance_from_stats(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray,
                                sigma_b: np.ndarray) -> float:
    """‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr (Σ_a Σ_b)^{1/2}, clipped at 0."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or \
            sigma_a.shape != mu_a.shape * 2:
        raise ValueError(f"mismatched statistics: means {mu_a.shape} / {mu_b.shape}, "
                         f"covariances {sigma_a.shape} / {sigma_b.shape}")
    d = (np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a) + np.trace(sigma_b)
         - 2.0 * trace_sqrt_product(sigma_a, sigma_b))
    return max(float(d), 0.0)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to features [N_a, D] and [N_b, D]."""
    return frechet_distance_from_stats(*feature_stats(feats_a), *feature_stats(feats_b))


def fvd(videos_a: np.ndarray, videos_b: np.ndarray, *, batch_size: int = 32,
        mesh: Mesh | None = None, dtype: str = "float32") -> float:
    """FVD between two sets of videos [N, T, H, W, 3] (uint8, or float in [−1, 1]).

    Both sets go through one I3D feature extractor (see `vdiff.eval.i3d`); use the same
    T for both (16 is the standard) and at least 2 videos per set.
    """
    a, b = i3d.check_videos(videos_a), i3d.check_videos(videos_b)
    if min(len(a), len(b)) < 2:
        raise ValueError(f"FVD needs at least 2 videos per set, got {len(a)} and {len(b)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two sets have {a.shape[1]} and {b.shape[1]} frames; "
                         "clip them to one length")
    extract = i3d.feature_extractor(batch_size=batch_size, mesh=mesh, dtype=dtype)
    return frechet_distance(extract(a, "I3D features of set A"),
                            extract(b, "I3D features of set B"))


def default_mesh() -> Mesh | None:
    """A data-parallel mesh over all devices on GPU/TPU; None (one device) on CPU."""
    import jax

    from vdiff.train import sharding
    if jax.default_backend() == "cpu" or jax.device_count() == 1:
        return None
    return sharding.make_mesh((-1, 1, 1))


@errors.cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = errors.ArgumentParser(
        prog="python -m vdiff.eval.fvd",
        description="Fréchet Video Distance between two folders of videos (or .npz files).")
    parser.add_argument("a", help="folder of videos / .npz file (e.g. real videos)")
    parser.add_argument("b", help="folder of videos / .npz file (e.g. generated videos)")
    parser.add_argument("--num_frames", type=int, default=DEFAULT_NUM_FRAMES,
                        help="clip every video to its first NUM_FRAMES frames (≥ 9)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_videos", type=int, default=0, help="use at most this many "
                        "videos per set (0: all)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args(argv)
    progress.log_to_stderr()
    from vdiff.eval import video_files
    if args.num_frames < i3d.MIN_FRAMES:
        raise ConfigError(f"--num_frames must be at least {i3d.MIN_FRAMES} for I3D, "
                          f"got {args.num_frames}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch_size must be ≥ 1, got {args.batch_size}")
    sets = [video_files.load_videos(src, num_frames=args.num_frames,
                                    max_videos=args.max_videos or None)
            for src in (args.a, args.b)]
    for src, videos in zip((args.a, args.b), sets):
        if len(videos) < 2:
            raise InputError(f"{src}: FVD needs at least 2 videos per set, found {len(videos)}")
    if sets[0].shape[2:4] != sets[1].shape[2:4]:
        raise InputError(f"{args.a} videos are {sets[0].shape[2]}x{sets[0].shape[3]} but "
                         f"{args.b} videos are {sets[1].shape[2]}x{sets[1].shape[3]}; "
                         "resize one set so both have the same size")
    value = fvd(*sets, batch_size=args.batch_size, mesh=default_mesh(), dtype=args.dtype)
    print(json.dumps({"fvd": value, "num_videos_a": len(sets[0]),
                      "num_videos_b": len(sets[1]), "num_frames": args.num_frames}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
