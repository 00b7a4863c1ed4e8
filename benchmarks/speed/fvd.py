"""Seconds for FVD of N generated vs N real 16×64×64 videos, end to end, on this device.

Random uint8 videos (speed does not depend on content). Times, separately: loading the
I3D weights, compiling (first batch), extracting the features of both sets (resize to
224×224 on device + I3D), and the Fréchet distance (float64 numpy). The batch is sharded
over all local devices on GPU/TPU. Prints JSON (device, date, jax version, settings,
timings).

  python benchmarks/speed/fvd.py [--num_videos 2048] [--batch_size 128] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from vdiff.eval import fvd, i3d  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_videos", type=int, default=2048, help="videos per set (N)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--num_frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="frame height and width")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--out", default="", help="also write the JSON here")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    shape = (args.num_videos, args.num_frames, args.size, args.size, 3)
    real = rng.integers(0, 256, shape, dtype=np.uint8)
    fake = rng.integers(0, 256, shape, dtype=np.uint8)

    start = time.perf_counter()
    mesh = fvd.default_mesh()
    extract = i3d.feature_extractor(batch_size=args.batch_size, mesh=mesh, dtype=args.dtype)
    load_s = time.perf_counter() - start

    t0 = time.perf_counter()
    extract(real[:args.batch_size])  # compile + one batch
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    feats_real, feats_fake = extract(real), extract(fake)
    features_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    value = fvd.frechet_distance(feats_real, feats_fake)
    frechet_s = time.perf_counter() - t0

    result = {
        "benchmark": "fvd",
        "device": jax.devices()[0].device_kind,
        "num_devices": jax.device_count() if mesh is not None else 1,
        "date": datetime.date.today().isoformat(),
        "jax_version": jax.__version__,
        "num_videos": args.num_videos,
        "video_shape": list(shape[1:]),
        "batch_size": args.batch_size,
        "dtype": args.dtype,
        "seconds_load_weights": round(load_s, 3),
        "seconds_compile_first_batch": round(compile_s, 3),
        "seconds_features": round(features_s, 3),
        "seconds_frechet": round(frechet_s, 3),
        "seconds_total": round(time.perf_counter() - start, 3),
        "videos_per_second": round(2 * args.num_videos / features_s, 1),
        "fvd": value,
    }
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
