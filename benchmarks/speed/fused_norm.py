"""The fused GroupNorm + FiLM + SiLU Pallas kernel (vdiff/nn/fused_norm.py) against the
pure-JAX path it replaces, on every norm shape of the VDM UNet: correctness on the device,
then device time of the forward and of forward + backward.

  python benchmarks/speed/fused_norm.py --out=benchmarks/results/fused_norm_h100_DATE.json

The shapes are those of `configs/vdm_ucf.py` with `--overrides` (default: 64 base channels,
batch 32, 16 frames of 64×64, no extra images: the train-step benchmark of
docs/performance.md), found by tracing the UNet with the fused path on; each distinct
(shape, FiLM) is timed once and weighted by how often the UNet calls it. Each timing runs
`--reps` chained calls inside one jitted loop (x ← op(x)), so launch overhead from Python
is not counted; `--sweep` also times a few tile sizes and warp counts of the kernel.

Prints one JSON object (device, date, jax, commit, and per shape: count, max errors against
the float32 maths and against the bf16 block, milliseconds per call of the kernel and of
the reference, the kernel's effective bandwidth) and the UNet-weighted totals.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from vdiff.methods.vdm import build_unet  # noqa: E402
from vdiff.nn import fused_norm as fn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vdm_train_step import load_config  # noqa: E402  (same config loading as the step benchmark)

DEFAULT_OVERRIDES = ("model.base_channels=64,train.batch_size=32,data.num_frames=16,"
                     "data.num_images_per_video=0,data.resolution=64")


def unet_norm_calls(config, dtype: str) -> dict[tuple, int]:
    """{(x shape, groups, FiLM?): number of calls} of the fused norm in one UNet forward."""
    calls: dict[tuple, int] = {}
    model_config = config.model.copy_and_resolve_references()
    model_config.fused_norm, model_config.dtype = "interpret", dtype
    model = build_unet(model_config, out_channels=config.data.channels)
    b = config.train.batch_size
    f = config.data.num_frames + config.data.get("num_images_per_video", 0)
    r = config.data.resolution
    z = jax.ShapeDtypeStruct((b, f, r, r, config.data.channels), jnp.float32)
    logsnr = jax.ShapeDtypeStruct((b,), jnp.float32)

    def record(x, gamma, beta, film_scale=None, film_shift=None, *, groups, eps, out_dtype,
               impl):
        key = (tuple(x.shape), groups, film_scale is not None)
        calls[key] = calls.get(key, 0) + 1
        return fn.reference(x, gamma, beta, film_scale, film_shift, groups=groups, eps=eps,
                            out_dtype=out_dtype)

    original, fn.fused = fn.fused, record
    try:
        kwargs = {"labels": jax.ShapeDtypeStruct((b,), jnp.int32)} if model.num_classes else {}
        jax.eval_shape(lambda z, l: model.init(jax.random.key(0), z, l, **kwargs), z, logsnr)
    finally:
        fn.fused = original
    return calls


def make_inputs(shape, film: bool, dtype, seed: int = 0):
    k = jax.random.split(jax.random.key(seed), 7)
    c = shape[-1]
    x = (1.5 * jax.random.normal(k[0], shape) + jax.random.normal(k[1], (c,))).astype(dtype)
    gamma = 1.0 + 0.3 * jax.random.normal(k[2], (c,))
    beta = 0.3 * jax.random.normal(k[3], (c,))
    lead = shape[:-3] + (c,)
    s = (0.3 * jax.random.normal(k[4], lead)).astype(dtype) if film else None
    t = (0.3 * jax.random.normal(k[5], lead)).astype(dtype) if film else None
    dy = jax.random.normal(k[6], shape).astype(dtype)
    return x, gamma, beta, s, t, dy


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def check(op_kernel, op_ref_bf16, op_exact, args, dy) -> dict:
    """Max |error| / max |want| of y and of every gradient: kernel vs float32 maths on the
    same inputs, and the bf16 block (reference in the compute dtype) vs the same maths."""
    def vg(op, args, dy):
        def run(*a):
            y, vjp = jax.vjp(op, *a)
            return y, vjp(dy)
        return jax.jit(run)(*args)

    y_k, g_k = vg(op_kernel, args, dy)
    y_b, g_b = vg(op_ref_bf16, args, dy)
    y_e, g_e = vg(op_exact, tuple(a.astype(jnp.float32) for a in args), dy.astype(jnp.float32))
    names = ["x", "gamma", "beta", "film_scale", "film_shift"][:len(args)]
    out = {"kernel_vs_f32": {"y": rel_err(y_k, y_e)}, "block_vs_f32": {"y": rel_err(y_b, y_e)}}
    for name, a, b, e in zip(names, g_k, g_b, g_e):
        out["kernel_vs_f32"][f"d{name}"] = rel_err(a, e)
        out["block_vs_f32"][f"d{name}"] = rel_err(b, e)
    out["ok"] = all(v < 2e-2 for v in out["kernel_vs_f32"].values())
    return out


def timed(fn_, *args, iters: int) -> float:
    """Median seconds of one call of a jitted function (compiled and warmed first)."""
    jax.block_until_ready(fn_(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn_(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_op(op, args, *, reps: int, iters: int) -> dict:
    """ms per call of op (forward) and of op + its VJP, chained `reps` times in one loop.
    The forward loop feeds y back as x; the backward loop feeds dx back as the cotangent
    and accumulates the parameter gradients so none of them is dead code."""
    x, rest = args[0], args[1:]

    @jax.jit
    def forward(x, *rest):
        return lax.fori_loop(0, reps, lambda i, x: op(x, *rest).astype(x.dtype), x)

    @jax.jit
    def forward_backward(x, *rest):
        def body(i, carry):
            dy, acc = carry
            _, vjp = jax.vjp(op, x, *rest)
            dx, *dparams = vjp(dy)
            acc = [a + d.astype(a.dtype) for a, d in zip(acc, dparams)]
            return dx.astype(dy.dtype), acc
        acc = [jnp.zeros(r.shape, jnp.float32) for r in rest]
        return lax.fori_loop(0, reps, body, (x, acc))

    return {"forward_ms": 1e3 * timed(forward, x, *rest, iters=iters) / reps,
            "forward_backward_ms": 1e3 * timed(forward_backward, x, *rest, iters=iters) / reps}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "vdm_ucf.py"))
    parser.add_argument("--overrides", default=DEFAULT_OVERRIDES,
                        help="key=value,... on the config (tuple values as a/b/c)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--reps", type=int, default=20, help="chained calls per timing")
    parser.add_argument("--iters", type=int, default=5, help="timings per op (median)")
    parser.add_argument("--sweep", action="store_true",
                        help="also time tile sizes 2048/8192, 4/8 warps, 1 pipeline stage")
    parser.add_argument("--interpret", action="store_true",
                        help="Pallas interpret mode (a CPU dry run of this script: slow; "
                             "use tiny --overrides)")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    config = load_config(args.config, args.overrides)
    dtype = jnp.dtype(args.dtype)
    calls = unet_norm_calls(config, args.dtype)
    dev = jax.devices()[0]
    result = {
        "benchmark": "fused_norm",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"{jax.device_count()} x {dev.device_kind}",
        "jax": jax.__version__,
        "commit": commit(),
        "config": f"{os.path.relpath(args.config, ROOT)}:{args.overrides}",
        "dtype": args.dtype,
        "reps": args.reps,
        "shapes": [],
    }
    tilings = [(fn.DEFAULT_BLOCK_ELEMS, None, None)]  # (tile elements, warps, stages)
    if args.sweep:
        tilings += [(2048, 4, None), (4096, 4, None), (8192, 8, None), (4096, None, 1)]
    totals = {"kernel": {"forward_ms": 0.0, "forward_backward_ms": 0.0},
              "reference": {"forward_ms": 0.0, "forward_backward_ms": 0.0}}
    for (shape, groups, film), count in sorted(calls.items(), key=lambda kv: -np.prod(kv[0][0])):
        row = {"shape": list(shape), "groups": groups, "film": film, "count": count,
               "supported": fn.supported(shape, groups, dtype)}
        x, gamma, beta, s, t, dy = make_inputs(shape, film, dtype)
        op_args = (x, gamma, beta) + ((s, t) if film else ())

        def ref(*a, out_dtype=None):
            return fn.reference(*a, groups=groups, out_dtype=out_dtype)

        def kernel(*a, block=fn.DEFAULT_BLOCK_ELEMS, warps=None, stages=None):
            return fn.group_norm_film_silu(*a, groups=groups, interpret=args.interpret,
                                           block_elems=block, num_warps=warps,
                                           num_stages=stages)
        try:
            if not row["supported"]:
                raise ValueError("unsupported: the UNet falls back to the reference here")
            row["errors"] = check(kernel, ref, ref, op_args, dy)
            row["reference"] = time_op(ref, op_args, reps=args.reps, iters=args.iters)
            for block, warps, stages in tilings:
                timing = time_op(functools.partial(kernel, block=block, warps=warps,
                                                   stages=stages),
                                 op_args, reps=args.reps, iters=args.iters)
                nbytes = x.size * x.dtype.itemsize
                timing["forward_gb_s"] = 3 * nbytes / timing["forward_ms"] / 1e6
                timing["forward_backward_gb_s"] = 8 * nbytes / timing["forward_backward_ms"] / 1e6
                row[f"kernel_tile{block}_warps{warps or 'auto'}_stages{stages or 'auto'}"] = timing
            row["kernel"] = row[f"kernel_tile{fn.DEFAULT_BLOCK_ELEMS}_warpsauto_stagesauto"]
            for name in ("kernel", "reference"):
                for k in ("forward_ms", "forward_backward_ms"):
                    totals[name][k] += count * row[name][k]
        except Exception as e:  # noqa: BLE001 - report and go on with the next shape
            row["error"] = f"{type(e).__name__}: {str(e)[:800]}"
        print(json.dumps(row), flush=True)
        result["shapes"].append(row)
    result["unet_totals_ms"] = totals
    result["all_correct"] = all(r.get("errors", {}).get("ok", False)
                                for r in result["shapes"] if r["supported"])
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
