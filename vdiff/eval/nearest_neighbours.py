"""Nearest training clips: how close generated clips are to the clips a model trained on.

A model that memorises reproduces its training clips, so its samples lie much closer to
their nearest training clip than fresh clips of the same distribution do. The distance is
the root-mean-square pixel difference on a [0, 1] scale over the whole clip (all frames,
pixels and channels); exact, by brute force over every reference clip, in blocks so a
15,000-clip training set never has to fit in device memory at once:

    d²(q, r) = |q|² + |r|² − 2 q·r     (matmul at full float32 precision)

then recomputed directly for each query's nearest clip.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _flat(videos: np.ndarray) -> np.ndarray:
    return np.asarray(videos).reshape(len(videos), -1)


@jax.jit
def _block_nearest(q: jax.Array, q_sq: jax.Array, r_u8: jax.Array) -> tuple[jax.Array, jax.Array]:
    r = r_u8.astype(jnp.float32) / 255.0
    d2 = (q_sq[:, None] + jnp.sum(r * r, axis=1)[None, :]
          - 2.0 * jnp.matmul(q, r.T, precision=jax.lax.Precision.HIGHEST))
    return jnp.min(d2, axis=1), jnp.argmin(d2, axis=1)


def nearest(queries: np.ndarray, references: np.ndarray,
            block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """uint8 queries [n, ...] and references [m, ...] of one shape per clip → (RMSE on a
    [0, 1] scale of each query to its nearest reference [n], that reference's index [n])."""
    queries, references = np.asarray(queries), np.asarray(references)
    if queries.shape[1:] != references.shape[1:]:
        raise ValueError(f"clips to compare must have one shape, got {queries.shape[1:]} "
                         f"(queries) and {references.shape[1:]} (references)")
    if not len(references):
        raise ValueError("no reference clips to compare with")
    q = jnp.asarray(_flat(queries), jnp.float32) / 255.0
    q_sq = jnp.sum(q * q, axis=1)
    refs = _flat(references)
    best_d2 = np.full(len(queries), np.inf)
    best_i = np.zeros(len(queries), np.int64)
    for start in range(0, len(refs), block):
        chunk = refs[start:start + block]
        if len(chunk) < block and start:  # pad the last block: one compiled shape
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], block - len(chunk), 0)])
        d2, i = jax.device_get(_block_nearest(q, q_sq, jnp.asarray(chunk)))
        better = d2 < best_d2
        best_d2 = np.where(better, d2, best_d2)
        best_i = np.where(better, np.minimum(i, len(refs) - 1 - start) + start, best_i)
    # the expansion cancels to ~1e-4 RMSE for identical clips: recompute the chosen pairs
    # directly, so a copy of a training clip is exactly 0
    diff = _flat(queries).astype(np.float64) - refs[best_i].astype(np.float64)
    return np.sqrt(np.mean(np.square(diff / 255.0), axis=1)), best_i


def memorisation_stats(sample_rmse: np.ndarray, fresh_rmse: np.ndarray,
                       quantile: float = 0.05) -> dict[str, float]:
    """Summaries of nearest-training-clip distances of samples against fresh clips:
    `ratio` = mean sample distance / mean fresh distance (1 when samples are as new to the
    training set as fresh data, → 0 when they copy it), and `close_fraction`: the fraction
    of samples nearer than the `quantile` of fresh clips (≈ `quantile` for new clips)."""
    threshold = float(np.quantile(fresh_rmse, quantile))
    return {"ratio": float(np.mean(sample_rmse) / max(np.mean(fresh_rmse), 1e-12)),
            "close_fraction": float(np.mean(sample_rmse < threshold)),
            "threshold": threshold}
