"""PVDM latent-model train step with and without `pvdm.cache_latents`, same run.

Builds the trainer's step for `configs/pvdm_ldm_digits.py` over a randomly initialised
`configs/pvdm_ae_digits.py` autoencoder (the step's cost does not depend on its weights),
once encoding each batch's videos with the frozen encoder and once reading cached latents,
and times both on this device. Prints JSON: XLA FLOPs per step, seconds per step,
examples/s and the ratio.

  python benchmarks/speed/pvdm_latent_cache.py --batch_size 128 --out results.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import flax.linen as nn
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vdm_train_step import time_steps  # noqa: E402

from tests.helpers import load_config  # noqa: E402
from vdiff.methods.pvdm import PVDMAutoencoderStage, PVDMLatentStage  # noqa: E402
from vdiff.train import metrics as metrics_lib  # noqa: E402
from vdiff.train import sharding  # noqa: E402
from vdiff.train.setup import build_train_fns  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    ae_config = load_config("pvdm_ae_digits", "")
    ae = PVDMAutoencoderStage(ae_config)
    ae_params = sharding.strip_boxes(jax.jit(ae.init)(jax.random.key(0), ae.example_batch(1)))
    ae_params = jax.tree.map(np.asarray, ae_params["autoencoder"])
    out = {"benchmark": "pvdm_latent_cache", "date": datetime.date.today().isoformat(),
           "device": jax.devices()[0].device_kind, "batch_size": args.batch_size,
           "config": "configs/pvdm_ldm_digits.py over configs/pvdm_ae_digits.py (random init)"}
    rng = np.random.default_rng(0)
    for cached in (True, False):  # cached first: a time limit then keeps the new number
        config = load_config("pvdm_ldm_digits", "")
        config.train.batch_size = args.batch_size
        config.pvdm.cache_latents = cached
        method = PVDMLatentStage(config, autoencoder=(ae_config, ae_params))
        mesh = sharding.make_mesh(config.mesh.shape)
        fns = build_train_fns(config, method, mesh)
        example = method.example_batch(args.batch_size)
        batch = {k: (rng.integers(0, 256, v.shape).astype(v.dtype) if v.dtype == np.uint8
                     else rng.uniform(-1, 1, v.shape).astype(v.dtype))
                 for k, v in example.items()}
        with jax.set_mesh(mesh), nn.logical_axis_rules(fns.rules):
            state = fns.init(jax.random.key(0))
            batch = fns.global_batch(batch)
            key = jax.random.key(1)
            lowered = fns.step.lower(state, batch, key)
            compiled = lowered.compile()
            flops = metrics_lib.step_flops(lowered, compiled, mesh.size)
            _, _, times = time_steps(compiled, state, batch, key, warmup=args.warmup,
                                     steps=args.steps)
        step_s = float(np.median(times))
        out["cached" if cached else "encoder_in_step"] = {
            "gflop_per_step": None if flops is None else flops / 1e9,
            "seconds_per_step": step_s, "examples_per_sec": args.batch_size / step_s}
        print(json.dumps(out), flush=True)
        write(out, args.out)  # each half as it finishes: a time limit keeps the first
    out["speedup"] = (out["encoder_in_step"]["seconds_per_step"]
                      / out["cached"]["seconds_per_step"])
    print(json.dumps(out, indent=2))
    write(out, args.out)


def write(out: dict, path: str) -> None:
    if path:
        with open(path, "w") as f:
            f.write(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
