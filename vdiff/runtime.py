"""Process-level JAX setup shared by the CLI, tests and notebooks."""

from __future__ import annotations

import os

import jax

DEFAULT_CACHE = os.path.join("~", ".cache", "vdiff", "jax_compilation_cache")


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
