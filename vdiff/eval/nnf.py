"""SinFusion's video metrics (Nikankin et al. 2023): NNFDIV, NNFDIST, next-frame PSNR.

Patches are the 3×3×3 space-time cubes at every position where they fit, flattened to
27·C values, pixels in [−1, 1] (uint8 is mapped there). For each patch q of the
generated video the nearest patch NN(q) of the original is found by exact L2 search
(‖q − k‖² = ‖q‖² − 2 q·k + ‖k‖² in float32 at highest matmul precision, chunked over
queries and keys so memory is O(chunk²), on device; the winning distance is then
recomputed directly, so a patch matched to itself has distance exactly 0).

  NNF:      field[t, y, x] = (t', y', x') − (t, y, x), the displacement from a generated
            patch to its nearest original patch (corner coordinates). A copy of the
            original has the identity match: an all-zero field.
  NNFDIV:   len(zlib.compress(raw, 9)) / len(raw), raw = the field as C-order int16
            little-endian bytes, shape [T', H', W', 3] (dt, dy, dx). Compressed over raw
            size: a copy (constant field) scores near 0; the more the generated video
            rearranges the original, the less regular the field and the HIGHER the score.
  NNFDIST:  mean over generated patches of ‖q − NN(q)‖₂ (how far from anything in the
            original the generated patches are; 0 for a copy).

  python -m vdiff.eval.nnf GENERATED ORIGINAL   # JSON {"nnfdiv", "nnfdist", ...}

GENERATED is a video file, an `.npz` or a folder (metrics are averaged over its videos);
ORIGINAL is one video (file or single-video `.npz`).
"""

from __future__ import annotations

import functools
import json
import sys
import zlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vdiff import errors
from vdiff.errors import InputError
from vdiff.eval import image_metrics
from vdiff.core.pixels import as_unit_range

PATCH = 3
QUERY_CHUNK = 1024
KEY_CHUNK = 4096


def _as_unit_range(video: Any) -> jax.Array:
    video = np.asarray(video)
    if video.ndim != 4:
        raise InputError(f"video must be [T, H, W, C], got shape {video.shape}")
    if min(video.shape[:3]) < PATCH:
        raise InputError(f"video of shape {video.shape} is smaller than a {PATCH}x{PATCH}x"
                         f"{PATCH} patch")
    return as_unit_range(jnp.asarray(video))


def extract_patches(video: jax.Array) -> jax.Array:
    """[T, H, W, C] → [T−2, H−2, W−2, 27·C], patch values ordered (dt, dy, dx, c)."""
    t, h, w, _ = video.shape
    n = PATCH - 1
    shifted = [video[i:t - n + i, j:h - n + j, k:w - n + k]
               for i in range(PATCH) for j in range(PATCH) for k in range(PATCH)]
    return jnp.concatenate(shifted, axis=-1)


def _pad_rows(x: jax.Array, multiple: int) -> jax.Array:
    return jnp.pad(x, ((0, -len(x) % multiple), (0, 0)))


@functools.partial(jax.jit, static_argnames=("query_chunk", "key_chunk"))
def nearest_neighbours(queries: jax.Array, keys: jax.Array, *, query_chunk: int = QUERY_CHUNK,
                       key_chunk: int = KEY_CHUNK) -> tuple[jax.Array, jax.Array]:
    """Exact L2 nearest key of each query: (index [Nq] int32, distance ‖q − k‖ [Nq]).

    argmin_k ‖k‖² − 2 q·k over key chunks (a scan keeping the running best; ties go to
    the lowest index), query chunks mapped one after another.
    """
    nq, nk = len(queries), len(keys)
    q_chunks = _pad_rows(queries, query_chunk).reshape(-1, query_chunk, queries.shape[1])
    k_pad = _pad_rows(keys, key_chunk)
    k_norm = jnp.where(jnp.arange(len(k_pad)) < nk, jnp.sum(k_pad ** 2, axis=1), jnp.inf)
    k_chunks = k_pad.reshape(-1, key_chunk, keys.shape[1])
    k_norm = k_norm.reshape(-1, key_chunk)
    offsets = jnp.arange(len(k_chunks), dtype=jnp.int32) * key_chunk

    def search(q: jax.Array) -> jax.Array:
        def step(best, chunk):
            best_d, best_i = best
            k, norm, offset = chunk
            d = norm[None, :] - 2.0 * jnp.matmul(q, k.T, precision="highest")
            i = jnp.argmin(d, axis=1)
            d_min = jnp.take_along_axis(d, i[:, None], axis=1)[:, 0]
            better = d_min < best_d
            return (jnp.where(better, d_min, best_d),
                    jnp.where(better, i.astype(jnp.int32) + offset, best_i)), None

        init = (jnp.full(len(q), jnp.inf), jnp.zeros(len(q), jnp.int32))
        (_, idx), _ = jax.lax.scan(step, init, (k_chunks, k_norm, offsets))
        return idx

    with jax.named_scope("nnf_search"):
        idx = jax.lax.map(search, q_chunks).reshape(-1)[:nq]
        dist = jnp.sqrt(jnp.sum((queries - keys[idx]) ** 2, axis=1))
    return idx, dist


def nearest_neighbour_field(generated: Any, original: Any, *, query_chunk: int = QUERY_CHUNK,
                            key_chunk: int = KEY_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """NNF of a generated video against the original (both [T, H, W, C], same C).

    Returns (field int32 [T', H', W', 3] displacements (dt, dy, dx), distances float32
    [T', H', W']), T' = T − 2 etc. of the generated video.
    """
    gen, orig = _as_unit_range(generated), _as_unit_range(original)
    if gen.shape[-1] != orig.shape[-1]:
        raise InputError(f"channel counts differ: {gen.shape} vs {orig.shape}")
    q, k = extract_patches(gen), extract_patches(orig)
    grid, orig_grid = q.shape[:3], k.shape[:3]
    q, k = q.reshape(-1, q.shape[-1]), k.reshape(-1, k.shape[-1])
    idx, dist = nearest_neighbours(q, k, query_chunk=min(query_chunk, len(q)),
                                   key_chunk=min(key_chunk, len(k)))
    match = np.stack(np.unravel_index(np.asarray(idx), orig_grid), axis=-1)
    here = np.stack(np.unravel_index(np.arange(len(match)), grid), axis=-1)
    field = (match - here).reshape(grid + (3,)).astype(np.int32)
    return field, np.asarray(dist).reshape(grid)


def nnf_diversity(field: np.ndarray) -> float:
    """zlib-compressed size / raw size of the field as C-order little-endian int16."""
    field = np.asarray(field)
    if np.abs(field).max(initial=0) > np.iinfo(np.int16).max:
        raise ValueError("NNF displacements do not fit in int16")
    raw = np.ascontiguousarray(field, dtype="<i2").tobytes()
    return len(zlib.compress(raw, 9)) / len(raw)


def nnf_metrics(generated: Any, original: Any, **chunks: int) -> dict[str, float]:
    """{'nnfdiv': NNFDIV, 'nnfdist': NNFDIST} of one generated video (see module doc)."""
    field, dist = nearest_neighbour_field(generated, original, **chunks)
    return {"nnfdiv": nnf_diversity(field), "nnfdist": float(dist.mean())}


def next_frame_psnr(pred: Any, target: Any, prev: Any, *,
                    data_range: float | None = None) -> dict[str, float]:
    """Mean PSNR of predicted next frames, and of the copy-last-frame baseline.

    pred, target, prev: frames [..., H, W, C] (prev = the frame before target).
    Returns {'psnr': PSNR(pred, target), 'copy_last_frame_psnr': PSNR(prev, target)}.
    """
    if np.shape(prev) != np.shape(target):
        raise ValueError(f"prev and target shapes differ: {np.shape(prev)} vs "
                         f"{np.shape(target)}")
    model = image_metrics.psnr(pred, target, data_range=data_range)
    copy = image_metrics.psnr(prev, target, data_range=data_range)
    return {"psnr": float(jnp.mean(model)), "copy_last_frame_psnr": float(jnp.mean(copy))}


@errors.cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = errors.ArgumentParser(
        prog="python -m vdiff.eval.nnf",
        description="SinFusion NNFDIV (diversity) and NNFDIST of generated videos against "
                    "the original video.")
    parser.add_argument("generated", help="video file, .npz or folder of generated videos")
    parser.add_argument("original", help="the original video (file or single-video .npz)")
    parser.add_argument("--query_chunk", type=int, default=QUERY_CHUNK)
    parser.add_argument("--key_chunk", type=int, default=KEY_CHUNK)
    args = parser.parse_args(argv)
    from vdiff.eval import video_files
    original = video_files.read_one(args.original)
    generated, _ = video_files.load_set(args.generated)
    per_video = [nnf_metrics(g, original, query_chunk=args.query_chunk,
                             key_chunk=args.key_chunk) for g in generated]
    print(json.dumps({k: float(np.mean([m[k] for m in per_video])) for k in per_video[0]}
                     | {"num_videos": len(per_video)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
