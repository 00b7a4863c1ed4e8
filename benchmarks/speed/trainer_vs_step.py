"""Trainer throughput of shipped configs against the isolated train step of the same config.

For each `--run NAME=CONFIG[:ARG][;key=value;...]` it trains through the CLI users run
(`python -m vdiff.main`, fresh workdir, `train.max_train_seconds` budget, no periodic
samples), reads the steady-state steps/s the trainer logged (median of the logged windows
after the first, which holds the compile), then compiles and times the same config's
step in isolation on random batches (`benchmarks/speed/vdm_train_step.py`; the persistent
compilation cache usually makes that second compile a load). `--workdir_of NAME=DIR`
reads a run already trained instead of training one.

  python benchmarks/speed/trainer_vs_step.py --out=$OUT/speed.json --seconds=120 \
      --run 'vdm_digits_full=configs/vdm_digits.py:full'

JSON: device, date, commit, and per run the trainer and isolated steps/s and their ratio.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import vdm_train_step  # noqa: E402

from vdiff import runtime  # noqa: E402


def load_config(spec: str, overrides: list[str]):
    """`path[:arg]` through the file's get_config(arg), then dotted key=value overrides
    cast to the type of the value they replace."""
    import importlib.util

    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    for item in overrides:
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        old = node[leaf]
        node[leaf] = (value.lower() in ("1", "true") if isinstance(old, bool)
                      else type(old)(value))
    return config


def trainer_rate(workdir: str) -> dict:
    """Steady-state steps/s from metrics.jsonl: the median of the logged windows after the
    first (the first holds the compile and the first batches)."""
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    rates = [r["steps_per_sec"] for r in rows if "steps_per_sec" in r][1:]
    if not rates:
        raise RuntimeError(f"{workdir}: fewer than two logged windows")
    return {"trainer_steps_per_s": statistics.median(rates), "trainer_windows": len(rates),
            "trainer_last_step": rows[-1]["step"], "trainer_last_loss": rows[-1].get("loss")}


def train(spec: str, overrides: list[str], workdir: str, seconds: float, log: str) -> float:
    flags = [f"--config.{o}" for o in overrides] + [
        f"--config.train.max_train_seconds={seconds}", "--config.train.sample_every=0",
        "--config.train.num_steps=1000000", "--config.train.checkpoint_every=0"]
    cmd = [sys.executable, "-m", "vdiff.main", f"--config={spec}", f"--workdir={workdir}",
           *flags]
    t0 = time.perf_counter()
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)
    return time.perf_counter() - t0


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("VDIFF_COMMIT", "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", action="append", default=[],
                        help="NAME=CONFIG[:ARG][;key=value...] (overrides for both sides)")
    parser.add_argument("--workdir_of", action="append", default=[],
                        help="NAME=DIR: read this trained run instead of training one")
    parser.add_argument("--seconds", type=float, default=120.0, help="trainer budget per run")
    parser.add_argument("--steps", type=int, default=30, help="timed isolated steps")
    parser.add_argument("--out", default="")
    parser.add_argument("--scratch", default="/tmp/trainer_vs_step")
    args = parser.parse_args()
    runtime.setup_compilation_cache()
    given = dict(x.split("=", 1) for x in args.workdir_of)
    dev = jax.devices()[0]
    result = {"benchmark": "trainer_vs_step", "device": f"{jax.device_count()} x "
              f"{dev.device_kind}", "date": datetime.datetime.now(
                  datetime.timezone.utc).isoformat(timespec="seconds"),
              "commit": commit(), "jax": jax.__version__, "backend": jax.default_backend(),
              "trainer_seconds": args.seconds, "runs": {}}
    for item in args.run:
        name, _, rest = item.partition("=")
        spec, *overrides = rest.split(";")
        row = {"config": spec, "overrides": overrides}
        try:
            workdir = given.get(name)
            if workdir is None:
                workdir = os.path.join(args.scratch, name)
                row["trainer_wall_s"] = train(spec, overrides, workdir, args.seconds,
                                              os.path.join(args.scratch, f"{name}.log"))
            row.update(trainer_rate(workdir))
            config = load_config(spec, overrides)
            row.update({f"model_{k.split('.')[-1]}": v for k, v in
                        runtime.resolved_model_settings(config.model).items()})
            step = vdm_train_step.bench(config, args.steps, warmup=3)
            row.update({"isolated_steps_per_s": 1.0 / step["step_s_median"],
                        "isolated_compile_s": step["compile_s"],
                        "batch_size": step["batch_size"],
                        "params_millions": step["params_millions"],
                        "peak_gib": step.get("peak_bytes_in_use_gib"),
                        "mfu_isolated": step.get("mfu")})
            row["trainer_over_isolated"] = row["trainer_steps_per_s"] / row["isolated_steps_per_s"]
        except Exception as e:  # noqa: BLE001 - record and go on with the next run
            row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
        result["runs"][name] = row
        print(json.dumps({name: row}), flush=True)
        if args.out:  # after every run, so a cut-off call keeps what finished
            with open(args.out, "w") as f:
                json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
