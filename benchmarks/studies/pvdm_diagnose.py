"""Where a trained PVDM run loses quality: the autoencoder, the latent model or the sampler.

Given a `pvdm_ldm` workdir (which names its autoencoder run), on `--num_videos` held-out
two-clip examples it measures, in one JSON:

  latent        statistics of the encoded planes (std, share of |z| > 0.9: tanh saturation)
  decoder       PSNR of decode(z + σ·ε) against the clip for several σ: how much latent error
                the decoder tolerates (a latent model's samples are never exact)
  one_step      latent MSE and decoded PSNR of the latent model's x̂0 from z_t at several
                noise levels, conditioned on the true first clip and unconditional
  fvd           FVD against the held-out clips of (a) the autoencoder's reconstructions,
                the ceiling for any latent model, and (b) samples of each `--samplers`
                entry (name:steps), two clips per video as in training
  digits        the digit classifier's confidence and score (vdiff/eval/digit_score.py)
                for the real clips, the reconstructions and each sampler's videos: what
                FVD cannot see at 32×32
  class_info    on held-out one-digit clips, how often the classifier reads the right digit
                in the real frames, in decode(z + σ·ε) for each σ (does the digit's
                identity survive latent errors of a sample's size?) and, for a
                class-conditional model, in the decoded one-step x̂0 from z_t at each noise
                level given the true class and given the null class (does the model use
                its class where the latent alone no longer tells the digit?)

and writes a PNG per row of (b) and one of the reconstructions (rows = videos, columns =
frames) next to the JSON, and each sampler's videos as `pvdm_diagnose_<sampler>.npz`.

  python benchmarks/studies/pvdm_diagnose.py --ldm_workdir W --out W/diagnose.json
  python benchmarks/studies/pvdm_diagnose.py --ldm_workdir W --fvd=0 --samplers= --out ...
      # no I3D weights needed, no sampling: latent, decoder, one-step and class_info only
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
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from vdiff.data import moving_digits, pipeline  # noqa: E402
from vdiff.data.video_io import to_uint8  # noqa: E402
from vdiff.diffusion import targets  # noqa: E402
from vdiff.eval import digit_score, fvd, i3d  # noqa: E402
from vdiff.eval.evaluators import to_i3d_clips  # noqa: E402
from vdiff.methods.pvdm import PVDMLatentStage  # noqa: E402
from vdiff.core.checkpoints import restore_ema_params  # noqa: E402
from vdiff.train import sharding  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over clips of the clip PSNR, data range 2 ([−1, 1] frames)."""
    mse = np.mean((np.asarray(a) - np.asarray(b)) ** 2, axis=tuple(range(1, np.ndim(a))))
    return float(np.mean(10 * np.log10(4.0 / np.maximum(mse, 1e-10))))


def save_grid(videos: np.ndarray, path: str, rows: int = 8) -> None:
    from PIL import Image

    v = to_uint8(np.asarray(videos[:rows]))  # [N, T, H, W, C]
    grid = np.concatenate([np.concatenate(list(clip), axis=1) for clip in v], axis=0)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)


def one_digit_clips(data_config, num: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `num` held-out (test) uint8 clips that show one digit, and that digit."""
    clips, classes = pipeline.take_clips(data_config, 4 * num, split="test", seed=1,
                                         random_flip=False, label_from="digit_set",
                                         with_labels=True)
    digits = [moving_digits.digits_of_class(int(c)) for c in classes]
    keep = [i for i, d in enumerate(digits) if len(d) == 1][:num]
    return clips[keep], np.asarray([digits[i][0] for i in keep])


def class_info(method, params, data_config, *, encode, decode, batches, num: int, sigmas,
               times, rng) -> dict:
    """The `class_info` section (module docstring) for clip 1 of one-digit clips; `encode`,
    `decode` (jitted, clips in [−1, 1]) and `batches` are main's, so nothing recompiles."""
    s = method.clip_frames
    clips, digits = one_digit_clips(data_config, num)
    clf = digit_score.classifier(int(data_config.resolution))
    # v: decoded clips in [−1, 1]
    acc = lambda v: digit_score.accuracy(to_uint8(np.asarray(v)), digits, clf)  # noqa: E731
    x = jnp.asarray(clips[:, :s], jnp.float32) / 127.5 - 1.0
    dec = lambda z: np.concatenate([decode(b) for b in batches(z)])  # noqa: E731
    z = jnp.concatenate([encode(b) for b in batches(x)])
    out = {"num_clips": len(digits), "real": digit_score.accuracy(clips[:, :s], digits, clf),
           "decoded_with_latent_noise": {}}
    for i, sigma in enumerate(sigmas):
        noise = sigma * jax.random.normal(jax.random.fold_in(rng, 200 + i), z.shape)
        out["decoded_with_latent_noise"][str(sigma)] = acc(dec(z + noise))
    if not method.num_classes:
        return out
    # clip 1 as the model samples it: unconditional on a previous clip (zeros)
    cond = jnp.zeros_like(z) if method.conditional else None
    true = jnp.asarray([moving_digits.one_digit_class(int(d)) for d in digits], jnp.int32)
    null = jnp.full_like(true, method.num_classes)
    denoise = jax.jit(lambda zt, l, lab: method.denoiser(params, cond, labels=lab)(zt, l))
    out["one_step_x0"] = {}
    for i, t in enumerate(times):
        logsnr = method.schedule(jnp.full((len(digits),), t))
        eps = jax.random.normal(jax.random.fold_in(rng, 300 + i), z.shape)
        zt = targets.q_sample(x0=z, eps=eps, logsnr=logsnr)
        out["one_step_x0"][str(t)] = {
            "logsnr": float(logsnr[0]),
            "true_class": acc(dec(jnp.clip(denoise(zt, logsnr, true), -1, 1))),
            "null_class": acc(dec(jnp.clip(denoise(zt, logsnr, null), -1, 1)))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ldm_workdir", required=True)
    parser.add_argument("--num_videos", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samplers", default="ddim:100,ddim:250,ancestral:256")
    parser.add_argument("--sigmas", default="0,0.05,0.1,0.2,0.3,0.5")
    parser.add_argument("--times", default="0.3,0.5,0.7,0.9")
    parser.add_argument("--fvd", type=int, default=1, help="0: no FVD (no I3D weights)")
    parser.add_argument("--class_times", default="0.2,0.3,0.5,0.7,0.9")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    sigmas = [float(v) for v in args.sigmas.split(",")]

    with open(os.path.join(args.ldm_workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    method = PVDMLatentStage(config)
    mesh = sharding.make_mesh((1, -1, 1))
    params, step = restore_ema_params(config, args.ldm_workdir, method, mesh)
    s = method.clip_frames
    n = args.num_videos
    real = pipeline.take_clips(config.data, n, split="test", seed=0, random_flip=False)
    n = len(real)  # a small test split (the `tiny` digits) holds fewer than asked
    x = jnp.asarray(real, jnp.float32) / 127.5 - 1.0  # [n, 2S, H, W, C]
    out: dict = {"benchmark": "pvdm_diagnose", "date": datetime.date.today().isoformat(),
                 "device": jax.devices()[0].device_kind, "ldm_workdir": args.ldm_workdir,
                 "ldm_step": int(step), "num_videos": n,
                 "autoencoder_workdir": config.pvdm.autoencoder_workdir}

    def dump() -> None:  # after every section, so a run cut short keeps what it measured
        if args.out:
            with open(args.out, "w") as f:
                f.write(json.dumps(out, indent=2) + "\n")

    encode = jax.jit(lambda v: method.encode(params, v))
    decode = jax.jit(lambda z: jnp.clip(method.decode(params, z), -1, 1))
    batches = lambda a: [a[i:i + args.batch] for i in range(0, len(a), args.batch)]  # noqa: E731
    z1 = jnp.concatenate([encode(b) for b in batches(x[:, :s])])
    z2 = jnp.concatenate([encode(b) for b in batches(x[:, s:])])
    zs = np.asarray(z2)
    out["latent"] = {"std": float(zs.std()), "abs_mean": float(np.abs(zs).mean()),
                     "saturated_share": float(np.mean(np.abs(zs) > 0.9))}

    clip2 = np.asarray(x[:, s:])
    rng = jax.random.key(0)
    out["decoder_psnr_vs_latent_noise"] = {}
    for i, sigma in enumerate(sigmas):
        noise = sigma * jax.random.normal(jax.random.fold_in(rng, i), z2.shape)
        rec = np.concatenate([decode(b) for b in batches(z2 + noise)])
        out["decoder_psnr_vs_latent_noise"][str(sigma)] = psnr(rec, clip2)

    out["class_info"] = class_info(
        method, params, config.data, encode=encode, decode=decode, batches=batches, num=n,
        sigmas=sigmas,
        times=[float(v) for v in args.class_times.split(",")], rng=jax.random.key(1))
    print(json.dumps({"class_info": out["class_info"]}), flush=True)
    dump()

    # one-step x̂0 below: an unconditional-on-class model's (null class for a class model)
    labels = (jnp.full((n,), method.num_classes, jnp.int32) if method.num_classes else None)
    denoise = jax.jit(lambda z, l, c: method.denoiser(params, c, labels=labels)(z, l))
    out["one_step"] = {}
    for i, t in enumerate(float(v) for v in args.times.split(",")):
        logsnr = method.schedule(jnp.full((n,), t))
        eps = jax.random.normal(jax.random.fold_in(rng, 100 + i), z2.shape)
        zt = targets.q_sample(x0=z2, eps=eps, logsnr=logsnr)
        row = {"logsnr": float(logsnr[0])}
        for name, cond in (("conditional", z1), ("unconditional", jnp.zeros_like(z1))):
            x0 = jnp.clip(denoise(zt, logsnr, cond), -1, 1)  # as the samplers do (clip_x0)
            rec = np.concatenate([decode(b) for b in batches(x0)])
            row[name] = {"latent_mse": float(jnp.mean((x0 - z2) ** 2)),
                         "decoded_psnr": psnr(rec, clip2)}
        out["one_step"][str(t)] = row
    dump()

    if args.fvd:
        extract = i3d.feature_extractor(batch_size=16, mesh=None)
        real_stats = fvd.feature_stats(extract(to_i3d_clips(real)))

    def fvd_of(videos: np.ndarray) -> float:
        if not args.fvd:
            return float("nan")
        stats = fvd.feature_stats(extract(to_i3d_clips(to_uint8(videos))))
        return float(fvd.frechet_distance_from_stats(*real_stats, *stats))

    directory = os.path.dirname(args.out) or "."
    recon = np.concatenate([np.concatenate([decode(encode(b[:, :s])), decode(encode(b[:, s:]))],
                                           axis=1) for b in batches(x)])
    out["fvd"] = {"reconstructions": fvd_of(recon)}
    clf = digit_score.classifier(int(config.data.resolution))
    out["digits"] = {"real": digit_score.score(real, clf),
                     "reconstructions": digit_score.score(to_uint8(recon), clf)}
    dump()
    save_grid(np.concatenate([np.asarray(x[:4]), recon[:4]]),
              os.path.join(directory, "pvdm_diagnose_real_vs_recon.png"))
    for spec in filter(None, args.samplers.split(",")):
        name, steps = spec.split(":")
        t0 = time.perf_counter()
        gen = jax.jit(lambda r, name=name, steps=int(steps): method.generate_long_video(
            params, r, args.batch, 2 * s, sampler=name, num_steps=steps,
            guidance_scale=float(config.sample.get("guidance_scale", 0.0))))
        videos = np.concatenate([np.asarray(gen(jax.random.fold_in(rng, 1000 + i)))
                                 for i in range(-(-n // args.batch))])[:n]
        out["fvd"][spec] = fvd_of(videos)
        out["fvd"][spec + "_seconds"] = time.perf_counter() - t0
        frames = to_uint8(videos)
        out["digits"][spec] = digit_score.score(frames, clf)
        np.savez_compressed(os.path.join(directory, f"pvdm_diagnose_{name}{steps}.npz"),
                            videos=frames)
        save_grid(videos, os.path.join(directory, f"pvdm_diagnose_{name}{steps}.png"))
        print(json.dumps({spec: out["fvd"][spec]}), flush=True)
        dump()
    dump()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
