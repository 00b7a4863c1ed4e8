"""The three interpolation schemes on a DreamPose run trained here, against real motion.

    python benchmarks/studies/interpolation_schemes.py --run=workdirs/dreampose_demo/vae \
        --workdir=workdirs/interpolation_schemes
    python benchmarks/studies/interpolation_schemes.py --run=/tmp/dp_demo/vae --workdir=/tmp/is --quick

The run is a DreamPose synthetic-people run (`benchmarks/studies/dreampose_synthetic_demo.py`; pass
its last stage, WORKDIR/vae). Its held-out subject n = data.num_subjects moves through a
keypoint sequence; frames i and i + G (both after the subject-stage photos, so never trained
on) are the two input images, their keypoints the two OpenPose files, and the G − 1 real
frames between them are the ground truth. Every scheme makes G + 1 frames through the CLI
(`vdiff.interpolation.cli.run`, one process, so compiled functions are reused). Measured
per scheme, averaged over the pairs:

* psnr_inner: PSNR of the generated inner frames vs the real ones (range [−1, 1]).
* smoothness: d_j = mean |f_{j+1} − f_j| over consecutive output frames (ends included);
  mean, max and max/mean (1 = the change is spread evenly; a jump gives a large ratio).
* iou_pose: IoU of the generated person's foreground (pixels differing from the subject's
  known background) with the limb mask of the real in-between pose (the DreamPose demo's
  measure and helpers).
* ghosting: of the pixels where an END frame shows the person but the real in-between
  frame does not, the fraction the generated frame paints as person. A cross-dissolve
  leaves both end poses visible (high); a real in-between frame scores 0 by construction.
  Read it with fg_area_ratio (generated / real foreground area): an empty frame has no
  ghosts.
Reference rows: ground_truth (the real frames) and pixel_crossfade (a pixel-space linear
blend of the two images: what "no model" looks like).
Writes WORKDIR/results.json and WORKDIR/strip.png (per pair, rows: ground truth, interp,
interp_denoise, did).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import imageio.v3 as iio
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dreampose_synthetic_demo import foreground, iou, limb_mask  # noqa: E402

from vdiff.data import dreampose_data, synthetic_people as sp, video_io  # noqa: E402
from vdiff.interpolation import cli, schemes  # noqa: E402
from vdiff.methods import dreampose as method_lib  # noqa: E402

FG_THRESHOLD = 0.25  # as in the DreamPose demo


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a - b) ** 2, axis=(-1, -2, -3))
    return float(np.mean(10 * np.log10(4.0 / np.maximum(mse, 1e-10))))


def measure(video: np.ndarray, gt: np.ndarray, kps: np.ndarray, background: np.ndarray
            ) -> dict:
    """Metrics of one [G + 1, H, W, 3] video against the real frames and keypoints."""
    r = gt.shape[1]
    d = np.abs(np.diff(video, axis=0)).mean(axis=(1, 2, 3))
    fg = foreground(video, background, FG_THRESHOLD)
    fg_gt = foreground(gt, background, FG_THRESHOLD)
    # pixels where an end frame shows the person but the real in-between frame does not
    ghost_region = (fg_gt[0] | fg_gt[-1])[None] & ~fg_gt[1:-1]
    painted = (fg[1:-1] & ghost_region).sum((1, 2)) / np.maximum(ghost_region.sum((1, 2)), 1)
    return {"psnr_inner": psnr(video[1:-1], gt[1:-1]),
            "step_mean": float(d.mean()), "step_max": float(d.max()),
            "step_max_over_mean": float(d.max() / max(d.mean(), 1e-8)),
            "iou_pose": iou(fg[1:-1], limb_mask(kps[1:-1], r)),
            "ghosting": float(painted.mean()),
            # generated / real person area: ghosting is only meaningful when this is ~1 (a
            # frame that paints no person at all has no ghosts either)
            "fg_area_ratio": float(fg[1:-1].sum() / max(fg_gt[1:-1].sum(), 1))}


def write_inputs(folder: str, name: str, image: np.ndarray, kps: np.ndarray) -> None:
    iio.imwrite(os.path.join(folder, f"{name}.png"), video_io.to_uint8(image))
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump({"people": [{"pose_keypoints_2d": np.asarray(kps).ravel().tolist()}]}, f)


def read_frames(out: str) -> np.ndarray:
    d = os.path.join(out, "frames")
    return np.stack([iio.imread(os.path.join(d, n)) for n in sorted(os.listdir(d))]
                    ).astype(np.float32) / 127.5 - 1.0


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="DreamPose run (the demo's WORKDIR/vae)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--quick", action="store_true", help="few pairs, few DDIM steps (CPU)")
    p.add_argument("--gap", type=int, default=0, help="G: frames i and i + G (default 8, "
                   "quick 4)")
    p.add_argument("--pairs", type=int, default=0, help="default 4, quick 2")
    p.add_argument("--ddim_steps", type=int, default=0, help="default 100, quick 20")
    p.add_argument("--noise_min", type=float, default=0.3)
    p.add_argument("--noise_max", type=float, default=0.55)
    p.add_argument("--s_image", type=float, default=2.0)
    p.add_argument("--s_pose", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    gap = a.gap or (4 if a.quick else 8)
    num_pairs = a.pairs or (2 if a.quick else 4)
    steps = a.ddim_steps or (20 if a.quick else 100)
    os.makedirs(a.workdir, exist_ok=True)
    t_start = time.perf_counter()

    config = method_lib.load_run_config(a.run)
    dc = config.data
    if dc.name != "synthetic_people":
        raise SystemExit(f"{a.run} was trained on {dc.name!r}; this benchmark needs the "
                         "synthetic_people data (it knows the real in-between frames)")
    n, k, t_all, r = (int(dc.num_subjects), int(dc.num_subject_photos), int(dc.num_frames),
                      int(dc.resolution))
    data = dreampose_data.synthetic(n + 1, t_all, r, int(dc.synthetic_seed))
    frames, kps = data["frames"][n], data["keypoints"][n]
    last_start = t_all - 1 - gap
    if last_start < k:
        raise SystemExit(f"the held-out sequence has {t_all - k} unseen frames, fewer than "
                         f"G + 1 = {gap + 1}: lower --gap")
    starts = sorted(set(np.linspace(k, last_start, num_pairs).round().astype(int).tolist()))
    _, app_seed = np.random.SeedSequence([int(dc.synthetic_seed) & 0xFFFFFFFF, n]
                                         ).generate_state(2)
    background = sp._background(sp.random_appearance(int(app_seed)), r, r) * 2.0 - 1.0

    # seconds: mean over the pairs after the first (the first one compiles)
    per_pair, rows, seconds = [], [], {s: 0.0 for s in schemes.SCHEMES}
    order = ("interp", "interp_denoise", "did")
    for i in starts:
        gt, gt_kps = frames[i:i + gap + 1], kps[i:i + gap + 1]
        folder = os.path.join(a.workdir, f"pair_{i:03d}")
        os.makedirs(folder, exist_ok=True)
        write_inputs(folder, "a", gt[0], gt_kps[0])
        write_inputs(folder, "b", gt[-1], gt_kps[-1])
        # uint8 like the PNGs the CLI reads and writes: no quantisation gap in the metrics
        gt = video_io.to_uint8(gt).astype(np.float32) / 127.5 - 1.0
        entry = {"start": i, "end": i + gap, "ground_truth": measure(gt, gt, gt_kps, background)}
        w = np.linspace(0, 1, gap + 1)[:, None, None, None]
        entry["pixel_crossfade"] = measure((1 - w) * gt[0] + w * gt[-1], gt, gt_kps, background)
        videos = {}
        for scheme in order:
            out = os.path.join(folder, scheme)
            args = cli.build_parser().parse_args([
                f"--dreampose_run={a.run}", f"--image_a={folder}/a.png",
                f"--image_b={folder}/b.png", f"--keypoints_a={folder}/a.json",
                f"--keypoints_b={folder}/b.json", f"--num_frames={gap + 1}",
                f"--scheme={scheme}", f"--ddim_steps={steps}", f"--noise_min={a.noise_min}",
                f"--noise_max={a.noise_max}", f"--s_image={a.s_image}",
                f"--s_pose={a.s_pose}", f"--seed={a.seed}", f"--out={out}"])
            t = time.perf_counter()
            cli.run(args, log=lambda s: None)
            if i != starts[0] or len(starts) == 1:
                seconds[scheme] += (time.perf_counter() - t) / max(len(starts) - 1, 1)
            videos[scheme] = read_frames(out)
            entry[scheme] = measure(videos[scheme], gt, gt_kps, background)
        per_pair.append(entry)
        rows += [gt] + [videos[s] for s in order]
        print(json.dumps({k_: v for k_, v in entry.items()}, indent=None))

    names = ("ground_truth", "pixel_crossfade") + order
    means = {s: {m: float(np.mean([e[s][m] for e in per_pair])) for m in per_pair[0][s]}
             for s in names}
    means["ground_truth"].pop("psnr_inner")  # identical frames: infinite
    results = {
        "benchmark": "interpolation_schemes", "quick": a.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": jax.devices()[0].device_kind, "run": os.path.abspath(a.run),
        "resolution": r, "train_subjects": n, "held_out_subject": n,
        "gap_G": gap, "num_frames": gap + 1, "pairs": [[i, i + gap] for i in starts],
        "ddim_steps": steps, "noise_min": a.noise_min, "noise_max": a.noise_max,
        "s_image": a.s_image, "s_pose": a.s_pose, "seed": a.seed,
        "means": means, "per_pair": per_pair,
        "seconds_per_pair_compiled": {s: round(v, 2) for s, v in seconds.items()},
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    with open(os.path.join(a.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    video_io.write_grid_png(os.path.join(a.workdir, "strip.png"),
                            video_io.to_uint8(np.stack(rows)))
    print(json.dumps({k_: v for k_, v in results.items() if k_ != "per_pair"}, indent=2))


if __name__ == "__main__":
    main()
