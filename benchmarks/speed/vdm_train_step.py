"""Times the VDM train step exactly as the trainer builds it, on random batches.

  python benchmarks/speed/vdm_train_step.py --out=results.json \
      --variant=ucf_b8:configs/vdm_ucf.py:train.batch_size=8 \
      --variant=dim64_b32:configs/vdm_ucf.py:model.base_channels=64,train.batch_size=32,data.num_images_per_video=0

Prints one JSON object (device, date, versions, and per variant: parameters, XLA
FLOPs per step, step time, videos/s, TFLOP/s per device, MFU, peak memory).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import importlib.util
import json
import os
import sys
import time

import flax.linen as nn
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from vdiff.methods import get_method  # noqa: E402
from vdiff.train import metrics as metrics_lib  # noqa: E402
from vdiff.train import sharding  # noqa: E402
from vdiff.train.setup import build_train_fns  # noqa: E402


def load_config(path: str, overrides: str):
    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(None)
    for item in filter(None, overrides.split(",")):
        key, value = item.split("=")
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        old = node[leaf]
        node[leaf] = type(old)(value) if not isinstance(old, tuple) else tuple(
            int(v) for v in value.split("/"))
    return config


def random_batch(method, batch_size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: (rng.integers(0, 256, v.shape).astype(v.dtype) if v.dtype == np.uint8
                else rng.integers(0, max(getattr(method, "num_classes", 0), 1), v.shape)
                .astype(v.dtype))
            for k, v in method.example_batch(batch_size).items()}


def time_steps(compiled, state, batch, rng, *, warmup: int, steps: int):
    """Runs `warmup` untimed then `steps` timed calls of the compiled step (each waited
    on); returns the final state, the last step's metrics and the per-step seconds. Call inside the run's mesh."""
    for _ in range(warmup):
        state, m = compiled(state, batch, rng)
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = compiled(state, batch, rng)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    return state, m, times


@contextlib.contextmanager
def exclusive(lock_path: str):
    """Holds an exclusive lock on `lock_path` ('' = no lock): benchmark processes sharing
    a machine compile in parallel and take turns for the timed steps."""
    if not lock_path:
        yield
        return
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def memory_analysis(compiled) -> dict:
    """XLA's buffer assignment of the compiled step, in GiB (None where not reported)."""
    mem = compiled.memory_analysis()
    gib = lambda name: None if mem is None or not hasattr(mem, name) else (  # noqa: E731
        getattr(mem, name) / 2**30)
    return {"xla_temp_gib": gib("temp_size_in_bytes"),
            "xla_argument_gib": gib("argument_size_in_bytes"),
            "xla_output_gib": gib("output_size_in_bytes"),
            "xla_alias_gib": gib("alias_size_in_bytes")}


def bench(config, steps: int, warmup: int, timing_lock: str = "") -> dict:
    """Compiles the trainer's step for `config` and times it; steps=0 compiles only (XLA's
    memory analysis, no timing)."""
    method = get_method(config)
    mesh = sharding.make_mesh(config.mesh.shape)
    fns = build_train_fns(config, method, mesh)
    batch_size = config.train.batch_size
    with jax.set_mesh(mesh), nn.logical_axis_rules(fns.rules):
        state = fns.abstract_state if steps == 0 else fns.init(jax.random.key(0))
        batch = fns.global_batch(random_batch(method, batch_size))
        rng = jax.random.key(1, impl=config.train.prng_impl)
        t0 = time.perf_counter()
        lowered = fns.step.lower(state, batch, rng)
        compiled = lowered.compile()
        compile_s = time.perf_counter() - t0
        flops = metrics_lib.step_flops(lowered, compiled, mesh.size)  # per device, cuDNN included
        if steps:
            with exclusive(timing_lock):
                state, m, times = time_steps(compiled, state, batch, rng, warmup=warmup,
                                             steps=steps)
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(fns.abstract_state.params))
    out = {
        "params_millions": params / 1e6,
        "batch_size": batch_size,
        "frames": config.data.num_frames + config.data.get("num_images_per_video", 0),
        "resolution": config.data.resolution,
        "dtype": config.model.dtype,
        "spatial_attention_impl": config.model.get("spatial_attention_impl",
                                                   config.model.get("attention_impl")),
        "remat": config.model.get("remat", "none"),
        "prng_impl": config.train.prng_impl,
        "compile_s": compile_s,
        "xla_flops_per_step_per_device": flops,
        **memory_analysis(compiled),
    }
    if not steps:
        return out
    step_s = float(np.median(times))
    peak = metrics_lib.peak_flops_per_device()
    stats = jax.devices()[0].memory_stats() or {}
    out.update({
        "step_s_median": step_s,
        "step_s_min": float(np.min(times)),
        "videos_per_s": batch_size / step_s,
        "loss": float(m["loss"]),
        "peak_bytes_in_use_gib": stats.get("peak_bytes_in_use", 0) / 2**30,
    })
    if flops:
        out["tflops_per_s_per_device"] = flops / step_s / 1e12
        if peak:
            out["mfu"] = flops / step_s / peak
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", action="append", required=True,
                        help="NAME:CONFIG_PATH[:key=value,...] (tuple values as a/b/c)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps; 0 = compile only")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default="")
    parser.add_argument("--timing_lock", default="",
                        help="file lock held during the timed steps (several processes on "
                             "one machine: parallel compiles, one timing at a time)")
    args = parser.parse_args()
    dev = jax.devices()[0]
    result = {
        "benchmark": "vdm_train_step",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"{jax.device_count()} x {dev.device_kind}",
        "jax": jax.__version__,
        "variants": {},
    }
    for spec in args.variant:
        name, path, *rest = spec.split(":")
        config = load_config(path, rest[0] if rest else "")
        try:
            result["variants"][name] = bench(config, args.steps, args.warmup, args.timing_lock)
        except Exception as e:  # noqa: BLE001 - report and continue with the next variant
            result["variants"][name] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
        print(json.dumps({name: result["variants"][name]}), flush=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
