"""PyTorch (diffusers / transformers layout) state dicts → linen params, safetensors only.

The naming contract: a linen parameter at path (m1, m2, …, leaf) corresponds to the
PyTorch tensor "m1.m2.….<torch leaf>", where linen module names carry the dots of
list indices themselves ("down_blocks.0"), and the leaf maps as

    kernel    → weight, transposed: Dense (in, out) ← (out, in); Conv HWIO ← OIHW
    scale     → weight   (LayerNorm, GroupNorm)
    embedding → weight   (nn.Embed)
    anything else keeps its name (bias, class_embedding, …)

Pickle checkpoints (.bin, .ckpt, .pt) are refused: loading them runs arbitrary code.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping

import jax
import numpy as np

from vdiff.errors import ConfigError

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "embedding": "weight"}
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
_SINGLE_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors")
_INDEX_FILES = ("diffusion_pytorch_model.safetensors.index.json",
                "model.safetensors.index.json")


class WeightConversionError(ConfigError):
    """The checkpoint does not fit the model: lists every missing, unexpected and
    mis-shaped tensor by name."""


def _refuse_pickle(path: str) -> None:
    if path.endswith(_PICKLE_SUFFIXES):
        raise WeightConversionError(
            f"{path} is a pickle checkpoint; vdiff only reads safetensors because "
            "unpickling runs arbitrary code. Re-save it as safetensors, e.g. "
            "`diffusers` `model.save_pretrained(dir, safe_serialization=True)`.")


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a .safetensors file, a sharded index json, or a folder holding either."""
    from safetensors.numpy import load_file

    _refuse_pickle(path)
    if os.path.isdir(path):
        for name in _SINGLE_FILES + _INDEX_FILES:
            if os.path.exists(os.path.join(path, name)):
                return load_state_dict(os.path.join(path, name))
        pickles = [f for f in sorted(os.listdir(path)) if f.endswith(_PICKLE_SUFFIXES)]
        hint = (f" It holds {pickles[0]}, a pickle file, which vdiff does not read."
                if pickles else "")
        raise WeightConversionError(
            f"No safetensors weights in {path} (looked for {', '.join(_SINGLE_FILES)} "
            f"and their sharded index files).{hint}")
    if not os.path.exists(path):
        raise WeightConversionError(f"Weights not found: {path}")
    if path.endswith(".json"):
        with open(path) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state: dict[str, np.ndarray] = {}
        for shard in shards:
            state.update(load_state_dict(os.path.join(os.path.dirname(path), shard)))
        return state
    if not path.endswith(".safetensors"):
        raise WeightConversionError(f"{path}: expected a .safetensors file.")
    # bf16 tensors come back as numpy's ml_dtypes bfloat16; cast to float32 here.
    return {k: np.asarray(v, dtype=np.float32) if v.dtype.kind == "V" or str(v.dtype) == "bfloat16"
            else v for k, v in load_file(path).items()}


def load_config(folder: str) -> dict[str, Any]:
    """The component's config.json (diffusers / transformers)."""
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        raise WeightConversionError(
            f"{folder} has no config.json; pass a diffusers-layout component folder "
            "(e.g. <sd>/unet, <sd>/vae, <sd>/text_encoder).")
    with open(path) as f:
        return json.load(f)


def torch_name(flax_path: tuple[str, ...]) -> str:
    """The PyTorch state-dict key of a linen parameter path (see the module docstring)."""
    *modules, leaf = flax_path
    return ".".join([*modules, _LEAF_TO_TORCH.get(leaf, leaf)])


def _to_flax(leaf: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """The torch tensor in linen layout, or None when it cannot take `shape`."""
    if leaf == "kernel":
        if value.ndim == 2 and len(shape) == 2:
            value = value.T
        elif value.ndim == 4 and len(shape) == 4:
            value = value.transpose(2, 3, 1, 0)
        elif value.ndim == 2 and len(shape) == 4 and shape[:2] == (1, 1):
            value = value.T[None, None]          # Linear stored where linen has a 1x1 conv
        elif value.ndim == 4 and len(shape) == 2 and value.shape[2:] == (1, 1):
            value = value[:, :, 0, 0].T           # 1x1 conv stored where linen has a Dense
    return value if tuple(value.shape) == tuple(shape) else None


def convert_state_dict(state: Mapping[str, np.ndarray], params_shapes: Any, *,
                       prefix: str = "", ignore: Iterable[str] = (),
                       dtype: Any = np.float32, what: str = "model") -> Any:
    """Builds linen params shaped like `params_shapes` (a pytree of arrays or
    ShapeDtypeStructs, e.g. from `jax.eval_shape(model.init, …)["params"]`) from `state`.

    prefix: prepended to every torch name (e.g. "text_model.").
    ignore: substrings of torch keys that may be left unused (buffers such as
      "position_ids").
    Raises WeightConversionError naming every missing, unexpected or mis-shaped tensor.
    """
    flat = jax.tree_util.tree_flatten_with_path(params_shapes)[0]
    treedef = jax.tree_util.tree_structure(params_shapes)
    used, missing, misshaped, leaves = set(), [], [], []
    for path, leaf in flat:
        keys = tuple(str(getattr(p, "key", p)) for p in path)
        name = prefix + torch_name(keys)
        if name not in state:
            missing.append(f"{name} (for {'/'.join(keys)}, shape {tuple(leaf.shape)})")
            leaves.append(None)
            continue
        used.add(name)
        value = _to_flax(keys[-1], np.asarray(state[name]), tuple(leaf.shape))
        if value is None:
            misshaped.append(f"{name}: checkpoint {tuple(state[name].shape)}, "
                             f"model expects {tuple(leaf.shape)} (linen layout)")
        leaves.append(None if value is None else np.asarray(value, dtype=dtype))
    ignore = tuple(ignore)
    unexpected = [k for k in sorted(state) if k not in used
                  and k.startswith(prefix) and not any(s in k for s in ignore)]
    if missing or misshaped or unexpected:
        parts = [f"The checkpoint does not fit the {what}."]
        for title, items in (("missing", missing), ("mis-shaped", misshaped),
                             ("unexpected", unexpected)):
            if items:
                shown = "\n  ".join(items[:50])
                more = f"\n  … and {len(items) - 50} more" if len(items) > 50 else ""
                parts.append(f"{len(items)} {title}:\n  {shown}{more}")
        parts.append("Check that the config (config.json) matches the weights, and that "
                     "the folder is a diffusers / transformers-layout component.")
        raise WeightConversionError("\n".join(parts))
    return jax.tree_util.tree_unflatten(treedef, leaves)
