"""Process-level JAX setup shared by the CLI, tests and notebooks, and the backend-aware
defaults every method resolves its compute dtype and attention implementation with."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

from vdiff.errors import ConfigError

DEFAULT_CACHE = os.path.join("~", ".cache", "vdiff", "jax_compilation_cache")

AUTO = "auto"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
ATTENTION_IMPLS = ("xla", "cudnn", "einsum")
FUSED_NORM = ("off", "on", "interpret")


def setup_compilation_cache(path: str | None = None) -> str | None:
    """Enables JAX's persistent compilation cache (set VDIFF_COMPILATION_CACHE=0 to disable).

    A restarted or resumed run then loads its compiled train step from disk instead of
    recompiling it, which on a CPU is most of the start-up time.
    """
    path = path or os.environ.get("VDIFF_COMPILATION_CACHE", DEFAULT_CACHE)
    if path in ("", "0", "none", "off"):
        return None
    path = os.path.expanduser(path)
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def dtype_name(name: str, *, backend: str | None = None) -> str:
    """A config's compute dtype by name; 'auto' is bfloat16 on GPU and TPU (their matrix
    units run bf16 at several times the float32 rate, and activations take half the
    memory) and float32 on CPU (no bf16 speed-up there, and the tests compare float32)."""
    if name == AUTO:
        return "float32" if (backend or jax.default_backend()) == "cpu" else "bfloat16"
    if name not in DTYPES:
        raise ConfigError(f"model.dtype {name!r} not in {sorted(DTYPES) + [AUTO]}")
    return name


def compute_dtype(name: str, *, backend: str | None = None) -> Any:
    """`dtype_name` as a jnp dtype (parameters stay float32 whatever this is)."""
    return DTYPES[dtype_name(name, backend=backend)]


def attention_impl(name: str | None, *, long_sequences: bool = True,
                   backend: str | None = None) -> str | None:
    """A config's attention implementation for `jax.nn.dot_product_attention`; None = XLA.

    'auto' is cuDNN's fused kernel on GPU for long sequences (spatial attention over H·W
    tokens: 5–6× faster than XLA in bf16) and XLA elsewhere (16-token temporal attention
    runs 2× slower in cuDNN; CPU and TPU have no cuDNN). Layers still fall back to XLA where
    cuDNN cannot run (float32, odd lengths: `vdiff.nn.attention.usable_implementation`).
    """
    if name == AUTO:
        gpu = (backend or jax.default_backend()) == "gpu"
        return "cudnn" if gpu and long_sequences else None
    if name in ("", None, "xla"):
        return None
    if name not in ATTENTION_IMPLS:
        raise ConfigError(f"attention implementation {name!r} not in "
                          f"{list(ATTENTION_IMPLS) + [AUTO]}")
    return name


def fused_norm(name: str | None, *, backend: str | None = None) -> str:
    """`model.fused_norm` resolved: 'off', 'on' (the Pallas/Triton GroupNorm + FiLM + SiLU
    kernel of `vdiff.nn.fused_norm`) or 'interpret' (the same kernel in Pallas interpret
    mode, any backend: tests only, slow).

    'auto' is 'off' on every backend until the kernel has been timed on a GPU (then: 'on' on
    GPU). 'on' is 'off' off GPU (the kernel is Triton); on GPU the kernel still falls back to
    the pure-JAX path for shapes it does not take and under multi-device meshes.
    """
    if name in (None, "", AUTO):
        return "off"
    if name not in FUSED_NORM:
        raise ConfigError(f"model.fused_norm {name!r} not in {list(FUSED_NORM) + [AUTO]}")
    if name == "on" and (backend or jax.default_backend()) != "gpu":
        return "off"
    return name


def resolved_model_settings(model_config: Any, *, backend: str | None = None) -> dict[str, str]:
    """What `model.dtype`, the `model.*attention_impl` keys and `model.fused_norm` resolve to
    on this backend, for the start-up log: {key: 'auto → bfloat16', ...} (explicit values
    shown as they are; a fused_norm that resolves otherwise as 'on → off')."""
    out = {}
    for key in sorted(model_config.keys()):
        value = model_config[key]
        if key == "dtype":
            got = dtype_name(value, backend=backend)
        elif key.endswith("attention_impl"):
            got = attention_impl(value, long_sequences=not key.startswith("temporal"),
                                 backend=backend) or "xla"
        elif key == "fused_norm":
            got = fused_norm(value, backend=backend)
            out[f"model.{key}"] = f"{value} → {got}" if value != got else got
            continue
        else:
            continue
        out[f"model.{key}"] = f"{value} → {got}" if value == AUTO else str(got)
    return out
