"""DreamPose end to end on synthetic people, with a measurement of pose following.

    python benchmarks/studies/dreampose_synthetic_demo.py --workdir=workdirs/dreampose_demo
        # ~5 min GPU
    python benchmarks/studies/dreampose_synthetic_demo.py --workdir=/tmp/dp_demo --quick
        # CPU check

Stages (each a normal run in WORKDIR/<stage>, through `vdiff.main` (the shared trainer)):
  0. base   the demo's base latent model: the tiny VAE trained from scratch on frames of the
            training subjects (L2 + L1 + small KL). Its latent std s sets the latent scaling
            factor 1/s of the diffusion stages (SD's `scaling_factor`, measured the same way).
  1. dataset  tiny UNet (+10 pose channels) + adapter over (image, pose window, frame)
            triples of `num_subjects` synthetic people (CLIP: a frozen random tiny tower).
  2. subject  finetune on `num_subject_photos` photos of the held-out subject (random crops).
  3. vae      decoder finetune on the same photos.
Then the held-out subject's photo is animated with the held-out rest of its own keypoint
sequence (frames never seen in training), and we measure
  * pose following: IoU between the generated person's foreground mask (pixels differing
    from the subject's known background) and the target pose's limb mask (render_pose_uv),
    against the IoU of the same masks with a *different* pose sequence — the first must be
    higher; the same IoUs of the ground-truth frames are reported as the ceiling;
  * PSNR of the generated frames vs the ground-truth synthetic frames.
Writes WORKDIR/results.json and WORKDIR/strip.png (rows: ground truth, generated, pose).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time

import jax
import numpy as np

from vdiff.train import trainer
from vdiff.data import dreampose_data, synthetic_people as sp, video_io
from vdiff.data import pose as pose_lib
from vdiff.methods import dreampose as method_lib
from vdiff.methods.dreampose.config import dreampose_defaults


def _configure(stage: str, a, stage_name: str, **dp_overrides):
    c = dreampose_defaults(stage)
    c.data.resolution, c.data.num_subjects, c.data.num_frames = a.resolution, a.subjects, a.frames
    c.data.num_subject_photos = a.photos
    c.mesh.shape = (1, 1, 1)
    c.train.log_every = max(1, a.steps // 10)
    c.train.max_train_seconds = a.seconds.get(stage_name, 0.0)
    c.train.max_nonfinite_steps = a.max_nonfinite_steps
    c.train.checkpoint_every = 0
    for k, v in dp_overrides.items():
        c.dreampose[k] = v
    return c


def foreground(frames: np.ndarray, background: np.ndarray, thr: float) -> np.ndarray:
    return np.abs(frames - background).mean(-1) > thr


def limb_mask(kps: np.ndarray, size: int) -> np.ndarray:
    return pose_lib.render_pose_uv(kps, size, limb_radius=0.05)[..., 0] > -1


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum((-1, -2))
    union = np.logical_or(a, b).sum((-1, -2))
    return float(np.mean(inter / np.maximum(union, 1)))


def train_stages(a, steps: dict, w, timings: dict) -> None:
    """Stages 0-3, each a normal run in WORKDIR/<stage>."""
    q = a.quick
    # 0. base VAE
    c = _configure("vae_pretrain", a, "base")
    c.train.update(batch_size=8 if q else 32, num_steps=steps["base"], lr=1e-3,
                   lr_schedule="cosine", warmup_steps=0 if q else 100)
    t = time.perf_counter()
    trainer.train_and_evaluate(c, w("base"))
    timings["base"] = time.perf_counter() - t
    _, base = method_lib.load_run(w("base"))
    vae_model = method_lib.build_model(c)
    frames_all = dreampose_data.synthetic(a.subjects + 1, a.frames, a.resolution, 0)["frames"]
    mean, _ = vae_model.vae.apply({"params": base["vae"]}, frames_all[:, :4].reshape(
        -1, a.resolution, a.resolution, 3), method=vae_model.vae.encode)
    scale = float(1.0 / max(float(np.std(np.asarray(mean))), 1e-3))
    print(f"latent std {1 / scale:.3f} -> scaling_factor {scale:.3f}")

    # 1. dataset stage
    c = _configure("dataset", a, "dataset", base_vae=w("base"))
    c.model.scaling_factor = scale
    c.train.update(batch_size=4 if q else 32, num_steps=steps["dataset"], lr=3e-4,
                   lr_schedule="cosine", warmup_steps=0 if q else 200, ema_decay=0.0 if q else 0.999)
    t = time.perf_counter()
    trainer.train_and_evaluate(c, w("dataset"))
    timings["dataset"] = time.perf_counter() - t
    # 2. subject stage, 3. VAE decoder, each from the previous run
    for stage, name, previous, lr in (("subject", "subject", "dataset", 5e-5),
                                      ("vae_decoder", "vae", "subject", 1e-4)):
        c = _configure(stage, a, name, init_from=w(previous))
        c.model.scaling_factor = scale
        c.train.update(batch_size=4 if q else 16, num_steps=steps[name], lr=lr, ema_decay=0.0)
        t = time.perf_counter()
        trainer.train_and_evaluate(c, w(name))
        timings[name] = time.perf_counter() - t


def _last_metrics(workdir: str) -> dict:
    if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
        return {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    last = rows[-1] if rows else {}
    last["skipped_steps"] = max([r.get("skipped_steps", 0) for r in rows] or [0])
    return last


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--quick", action="store_true", help="tiny sizes/steps (CPU check)")
    p.add_argument("--s_image", type=float, default=2.0)
    p.add_argument("--s_pose", type=float, default=4.0)
    p.add_argument("--sample_steps", type=int, default=0)
    p.add_argument("--resolution", type=int, default=0)
    p.add_argument("--subjects", type=int, default=0)
    p.add_argument("--steps", default="", help="base,dataset,subject,vae step counts")
    p.add_argument("--seconds", default="", help="base,dataset,subject,vae wall-clock "
                   "budgets (train.max_train_seconds; 0 = none)")
    p.add_argument("--train_device", default="", help="with --eval_only: where the runs "
                   "were trained (recorded in results.json)")
    p.add_argument("--eval_only", action="store_true",
                   help="skip training: animate and measure the runs already in WORKDIR")
    p.add_argument("--max_nonfinite_steps", type=int, default=20,
                   help="non-finite steps each stage may skip before it stops")
    a = p.parse_args()
    q = a.quick
    res, subjects = a.resolution, a.subjects
    a.resolution, a.subjects, a.frames, a.photos = (32, 4, 12, 4) if q else (64, 64, 32, 6)
    a.resolution, a.subjects = res or a.resolution, subjects or a.subjects
    counts = [4, 6, 4, 4] if q else [3000, 8000, 400, 300]
    if a.steps:
        counts = [int(x) for x in a.steps.split(",")]
    steps = dict(zip(("base", "dataset", "subject", "vae"), counts))
    seconds = dict(zip(steps, [float(x) for x in a.seconds.split(",")] if a.seconds
                       else [0.0] * 4))
    a.steps, a.seconds = steps["base"], seconds
    sample_steps = a.sample_steps or (3 if q else 50)
    w = lambda s: os.path.join(a.workdir, s)  # noqa: E731
    t_start, timings = time.perf_counter(), {}

    if not a.eval_only:
        train_stages(a, steps, w, timings)

    # animate the held-out subject with its unseen poses
    config, params = method_lib.load_run(w("vae"))
    model = method_lib.build_model(config)
    n, k, r = a.subjects, a.photos, a.resolution
    data = dreampose_data.synthetic(n + 1, a.frames, r, 0)
    gt = data["frames"][n, k:]
    kps = data["keypoints"][n, k:]
    other = sp.random_motion(a.frames, seed=987_654, size=r)[k:]
    t = time.perf_counter()
    video = method_lib.animate(model, params, data["subject_image"][n], data["poses"][n, k:],
                               jax.random.key(0), s_image=a.s_image, s_pose=a.s_pose,
                               num_steps=sample_steps, sampler="ddim", shared_noise=True)
    timings["animate"] = time.perf_counter() - t
    _, app_seed = np.random.SeedSequence([0, n]).generate_state(2)
    background = sp._background(sp.random_appearance(int(app_seed)), r, r) * 2.0 - 1.0
    fg_gen, fg_gt = foreground(video, background, 0.25), foreground(gt, background, 0.25)
    target, wrong = limb_mask(kps, r), limb_mask(other, r)
    mse = np.mean((video - gt) ** 2, axis=(1, 2, 3))
    stage_metrics = {s_: _last_metrics(w(s_)) for s_ in steps}  # each file read once
    results = {
        "benchmark": "dreampose_synthetic_demo", "quick": q,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": jax.devices()[0].device_kind,
        "train_device": a.train_device or jax.devices()[0].device_kind, "resolution": r, "train_subjects": n,
        "subject_photos": k, "test_frames": len(gt), "sample_steps": sample_steps,
        "s_image": a.s_image, "s_pose": a.s_pose, "latent_scaling_factor": float(config.model.scaling_factor),
        "iou_generated_vs_target_pose": iou(fg_gen, target),
        "iou_generated_vs_other_pose": iou(fg_gen, wrong),
        "iou_groundtruth_vs_target_pose": iou(fg_gt, target),
        "iou_groundtruth_vs_other_pose": iou(fg_gt, wrong),
        "psnr_generated_vs_groundtruth": float(np.mean(10 * np.log10(4.0 / np.maximum(mse, 1e-10)))),
        "psnr_subject_photo_vs_groundtruth": float(np.mean(10 * np.log10(4.0 / np.maximum(
            np.mean((data["subject_image"][n][None] - gt) ** 2, axis=(1, 2, 3)), 1e-10)))),
        "seconds": {k_: round(v, 1) for k_, v in timings.items()},
        "train_steps": {s_: m.get("step") for s_, m in stage_metrics.items()},
        "skipped_nonfinite_steps": {s_: m.get("skipped_steps", 0)
                                    for s_, m in stage_metrics.items()},
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    results["pose_following"] = (results["iou_generated_vs_target_pose"]
                                 > results["iou_generated_vs_other_pose"])
    with open(w("results.json"), "w") as f:
        json.dump(results, f, indent=2)
    pose_rgb = np.concatenate([data["poses"][n, k:], data["poses"][n, k:, ..., :1]], -1)
    strip = video_io.to_uint8(np.stack([gt, video, pose_rgb])[:, :16])
    video_io.write_grid_png(w("strip.png"), strip)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
