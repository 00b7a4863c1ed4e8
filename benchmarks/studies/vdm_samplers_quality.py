"""Sample quality against network evaluations, per sampler, for a trained moving-digits VDM.

For each sampler (ancestral, DDIM, predictor-corrector, DPM-Solver++(2M)) and step count it
draws `--videos` class-conditional samples from the EMA parameters (classifier-free
guidance w = `--guidance`, asking each digit alone in turn) and reports FVD (I3D, against as
many held-out clips, the evaluators' protocol) and digit accuracy (how often the digit
classifier reads the asked digit). The step count is a traced argument, so each sampler
compiles once.

  python benchmarks/studies/vdm_samplers_quality.py --config=configs/vdm_digits.py:full,res=32 \
      --workdir=WORKDIR --out=samplers.json

JSON: device, date, commit, the protocol, and one row per (sampler, steps).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(BENCHMARKS, "speed"))  # trainer_vs_step's helpers
sys.path.insert(0, os.path.dirname(BENCHMARKS))  # the repository root

from trainer_vs_step import commit, load_config  # noqa: E402

from vdiff import runtime  # noqa: E402
from vdiff.data import pipeline  # noqa: E402
from vdiff.data.video_io import to_uint8  # noqa: E402
from vdiff.diffusion import samplers  # noqa: E402
from vdiff.eval import digit_score, fvd, i3d, protocol  # noqa: E402
from vdiff.eval.evaluators import to_i3d_clips  # noqa: E402
from vdiff.methods import get_method  # noqa: E402
from vdiff.core.checkpoints import restore_ema_params  # noqa: E402
from vdiff.train import sharding  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--samplers", default="ancestral,ddim,pc,dpmpp_2m")
    p.add_argument("--steps", default="10,25,50,256")
    p.add_argument("--videos", type=int, default=256)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--out", default="")
    args = p.parse_args()
    runtime.setup_compilation_cache()
    config = load_config(args.config, [])
    method = get_method(config)
    mesh = sharding.make_mesh(config.mesh.shape)
    params, step = restore_ema_params(config, args.workdir, method, mesh)
    n, batch = args.videos, args.batch
    labels = np.asarray(method.sample_labels(-(-n // batch) * batch))
    clf = digit_score.classifier(int(config.data.resolution))
    extract = i3d.feature_extractor(batch_size=32)
    # the FVD protocol's reference clips (moving digits: 2,048 held-out videos)
    real = pipeline.take_clips(protocol.reference_data(config.data), n, split="test", seed=0)
    real_stats = fvd.feature_stats(extract(to_i3d_clips(real)))
    dev = jax.devices()[0]
    result = {"benchmark": "vdm_samplers_quality", "device": f"{jax.device_count()} x "
              f"{dev.device_kind}", "date": datetime.datetime.now(
                  datetime.timezone.utc).isoformat(timespec="seconds"),
              "commit": commit(), "config": args.config, "checkpoint_step": step,
              "videos": n, "real_videos": len(real), "guidance_scale": args.guidance,
              "digit_accuracy_real": digit_score.reference_accuracy(
                  clf, resolution=int(config.data.resolution)), "rows": []}

    for name in args.samplers.split(","):
        fn = jax.jit(lambda prm, rng, lab, k, name=name: method.sample(
            prm, rng, num_samples=batch, labels=lab, num_steps=k,
            guidance_scale=args.guidance, sampler=name))
        for steps in (int(s) for s in args.steps.split(",")):
            t0 = time.perf_counter()
            videos = []
            for i in range(0, n, batch):
                out = fn(params, jax.random.fold_in(jax.random.key(0), i),
                         jnp.asarray(labels[i:i + batch]), jnp.int32(steps))
                videos.append(to_uint8(np.asarray(jax.device_get(out))))
            videos = np.concatenate(videos)[:n]
            seconds = time.perf_counter() - t0
            fake_stats = fvd.feature_stats(extract(to_i3d_clips(videos)))
            row = {"sampler": name, "steps": steps,
                   "nfe": samplers.num_function_evals(name, steps),
                   "fvd": float(fvd.frechet_distance_from_stats(*real_stats, *fake_stats)),
                   "digit_accuracy": digit_score.one_digit_accuracy(videos, labels[:n], clf),
                   "sample_seconds": seconds}
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "w") as f:
                    json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
