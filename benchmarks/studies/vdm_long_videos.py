"""Long videos from a 16-frame moving-digits VDM: reconstruction guidance against replacement.

Each held-out clip gives its first T/2 frames; `vdiff.sampling.extend` continues them to
`--frames` frames (default 64, 4× the window), half a window of context at a time, once with
reconstruction guidance (VDM's form) and once with the replacement method, from the same EMA
parameters, seeds and sampler. The model is asked for no class (the null label, no
classifier-free guidance), so whatever keeps a digit's identity comes from the context frames.

Reported per conditioning method:
  fvd_windows         FVD (I3D) of each consecutive T-frame window of the long videos against
                      the held-out clips; the last one is the late window
  digit_accuracy      for clips showing one digit, how often the digit classifier reads the
                      clip's digit in the sampled frames (all of them, and per window); the
                      given frames' own accuracy is the ceiling
  seam_jump           mean |x_t − x_{t−1}| (pixels in [0, 1]) where a window's first sampled
                      frame meets its context, against the same at sampled frames inside a
                      window (`within_jump`; real clips: `real_jump`); a ratio near 1 is seamless

  python benchmarks/studies/vdm_long_videos.py --config=configs/vdm_digits.py:full,res=32 \
      --workdir=WORKDIR --out=long_videos.json

JSON: device, date, commit, the protocol and one row per conditioning method.
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

from vdiff import runtime, sampling  # noqa: E402
from vdiff.core.checkpoints import restore_ema_params  # noqa: E402
from vdiff.core.pixels import to_uint8  # noqa: E402
from vdiff.data import moving_digits, pipeline  # noqa: E402
from vdiff.eval import digit_score, fvd, i3d, protocol  # noqa: E402
from vdiff.eval.sampling_evaluators import to_i3d_clips  # noqa: E402
from vdiff.methods import get_method  # noqa: E402
from vdiff.train import sharding  # noqa: E402


def seam_frames(window: int, given: int, total: int) -> np.ndarray:
    """Indices t of the long video where a window's first sampled frame follows its context
    (frame t − 1 came from the window before), for `extend` started from `given` frames."""
    seams, have = [], given
    while have < total:
        seams.append(have)
        have += window - min(window // 2, have)
    return np.asarray(seams)


def jumps(videos: np.ndarray) -> np.ndarray:
    """Mean |x_t − x_{t−1}| per frame t ≥ 1 over videos, pixels scaled to [0, 1]: [T − 1]."""
    x = np.asarray(videos, np.float32) / 255.0
    return np.abs(np.diff(x, axis=1)).mean(axis=(0, 2, 3, 4))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--videos", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--sampler", default="ancestral")
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--methods", default="reconstruction,replacement")
    p.add_argument("--out", default="")
    args = p.parse_args()
    runtime.setup_compilation_cache()
    config = load_config(args.config, [])
    method = get_method(config)
    mesh = sharding.make_mesh(config.mesh.shape)
    params, step = restore_ema_params(config, args.workdir, method, mesh)
    window, total = int(config.data.num_frames), args.frames
    given = window // 2
    real, classes = pipeline.take_clips(config.data, args.videos, split="test", seed=0,
                                        random_flip=False, with_labels=True)
    n = len(real) // args.batch * args.batch
    if n == 0:
        raise SystemExit(f"need at least --batch={args.batch} held-out clips, have {len(real)}")
    real, classes = real[:n], classes[:n]
    # digit-set classes name the digits a clip shows; the identity check reads one-digit clips
    digits = ([moving_digits.digits_of_class(int(c)) for c in classes]
              if config.data.get("label_from") == "digit_set" else [() for _ in classes])
    alone = np.asarray([i for i, d in enumerate(digits) if len(d) == 1], int)
    alone_digit = np.asarray([digits[i][0] for i in alone], int)
    accuracy = (lambda v: digit_score.accuracy(v, alone_digit, clf)) if len(alone) else (
        lambda v: None)
    clf = digit_score.classifier(int(config.data.resolution))
    extract = i3d.feature_extractor(batch_size=32)
    # FVD reference: the FVD protocol's held-out clips, as many as there are long videos
    reference = pipeline.take_clips(protocol.reference_data(config.data), n, split="test",
                                    seed=1)
    real_stats = fvd.feature_stats(extract(to_i3d_clips(reference)))
    seams = seam_frames(window, given, total)
    inside = np.setdiff1d(np.arange(given + 1, total), seams)
    null = (jnp.full((args.batch,), method.num_classes, jnp.int32) if method.num_classes
            else None)
    real_jumps = jumps(reference)
    dev = jax.devices()[0]
    result = {
        "benchmark": "vdm_long_videos", "device": f"{jax.device_count()} x {dev.device_kind}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(), "config": args.config, "checkpoint_step": step,
        "window": window, "given_frames": given, "frames": total, "videos": n,
        "one_digit_videos": int(len(alone)), "reference_clips": int(len(reference)),
        "sampler": args.sampler, "steps": args.steps, "label": "null (no class)",
        "seams": seams.tolist(), "real_jump": float(real_jumps.mean()),
        "given_digit_accuracy": accuracy(real[alone, :given]),
        "rows": []}
    for conditioning in args.methods.split(","):
        opts = sampling.SampleOptions.resolve(config, dict(
            application="extend", sampler=args.sampler, num_steps=args.steps,
            num_samples=args.batch, conditioning=conditioning, guidance_scale=0.0))
        opts.check()
        ws = sampling.WindowSampler(method, params, opts, null)
        t0 = time.perf_counter()
        videos = []
        for i in range(0, n, args.batch):
            start = jnp.asarray(real[i:i + args.batch, :given], jnp.float32) / 127.5 - 1.0
            out = sampling.extend(ws, jax.random.key(i), total, start)
            videos.append(to_uint8(np.asarray(jax.device_get(out))))
        ws.bar.close()
        videos = np.concatenate(videos)
        seconds = time.perf_counter() - t0
        fvd_windows = []
        for s in range(0, total - window + 1, window):
            stats = fvd.feature_stats(extract(to_i3d_clips(videos[:, s:s + window])))
            fvd_windows.append(float(fvd.frechet_distance_from_stats(*real_stats, *stats)))
        j = jumps(videos)
        row = {
            "conditioning": conditioning, "recon_weight": opts.recon_weight,
            "fvd_windows": fvd_windows, "fvd_late": fvd_windows[-1],
            "digit_accuracy": accuracy(videos[alone, given:]),
            "digit_accuracy_windows": [
                accuracy(videos[alone, s:s + window])
                for s in range(0, total - window + 1, window)],
            "seam_jump": float(j[seams - 1].mean()), "within_jump": float(j[inside - 1].mean()),
            "sample_seconds": seconds}
        row["seam_ratio"] = row["seam_jump"] / row["within_jump"]
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
