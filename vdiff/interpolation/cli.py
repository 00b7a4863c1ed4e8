"""Interpolation video between two real images with a pretrained latent diffusion model.

    python -m vdiff.interpolation.cli --sd=SD_DIR --image_a=a.png --image_b=b.png \
        --prompt_a="..." --prompt_b="..." --num_frames=17 --scheme=did --out=OUT
    python -m vdiff.interpolation.cli --dreampose_run=WORKDIR/vae --image_a=a.png \
        --image_b=b.png --keypoints_a=a.json --keypoints_b=b.json --out=OUT

The model is a diffusers Stable Diffusion folder (--sd: text prompts, textual inversion,
optional ControlNet pose guidance) or a DreamPose run trained here (--dreampose_run: the
image contexts of the two images are interpolated in place of text embeddings and the
interpolated keypoints drive its pose input; dual guidance --s_image / --s_pose).

Writes OUT/interpolation.mp4, OUT/frames/frame_NNN.png and OUT/run.json (settings,
per-frame noise levels, textual inversion losses, CLIP scores and picks). With
--interactive also OUT/candidates/frame_NNN/cand_C.png and OUT/candidates/scores.json;
rerun with --choices=FRAME:CAND,... to keep chosen candidates.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

from vdiff import errors
from vdiff.errors import ConfigError
from vdiff.core.pixels import load_image, resize_image


def build_parser() -> argparse.ArgumentParser:
    p = errors.ArgumentParser(prog="python -m vdiff.interpolation.cli",
                                description=__doc__.split("\n")[1])
    a = p.add_argument
    a("--sd", default=None, help="diffusers-layout Stable Diffusion folder")
    a("--dreampose_run", default=None, help="workdir of a DreamPose run trained here "
      "(instead of --sd; needs --keypoints_a/--keypoints_b)")
    a("--s_image", type=float, default=2.0, help="DreamPose image guidance scale")
    a("--s_pose", type=float, default=4.0, help="DreamPose pose guidance scale")
    a("--context_interp", default="slerp", help="DreamPose image contexts: slerp | lerp")
    a("--image_a", required=True)
    a("--image_b", required=True)
    a("--prompt_a", default="")
    a("--prompt_b", default="")
    a("--negative", default="")
    a("--keypoints_a", default=None, help="OpenPose JSON of image a")
    a("--keypoints_b", default=None, help="OpenPose JSON of image b")
    a("--controlnet", default=None, help="diffusers-layout OpenPose ControlNet folder")
    a("--control_strength", type=float, default=1.0)
    a("--control_profile", default="constant", help="constant | taper | sine")
    a("--num_frames", type=int, default=17)
    a("--scheme", default="did", help="did | interp_denoise | interp")
    a("--noise_min", type=float, default=0.3)
    a("--noise_max", type=float, default=0.55)
    a("--shape", default="linear", help="linear | convex | concave")
    a("--branching", default="2", help="DID branching factor, or one per depth: 3,2")
    a("--ddim_steps", type=int, default=200)
    a("--guidance_scale", type=float, default=7.5)
    a("--candidates", type=int, default=1)
    a("--clip", default=None, help="transformers CLIPModel folder for ranking candidates")
    a("--rank_prompt", default=None, help="positive prompt for CLIP ranking "
      "(default: prompt_a and prompt_b joined)")
    a("--interactive", action="store_true", help="save all candidates and their scores")
    a("--choices", default=None, help="FRAME:CAND,... (or a JSON file) forced picks")
    a("--inversion_steps", type=int, default=0)
    a("--inversion_lr", type=float, default=1e-4)
    a("--cache_dir", default=None, help="textual inversion cache (default OUT/textinv_cache)")
    a("--resize", default=None, help="HxW: resize both images to this size")
    a("--dtype", default="float32", help="compute dtype: float32 | bfloat16 | float16 "
      "(params stay float32)")
    a("--seed", type=int, default=0)
    a("--fps", type=int, default=8)
    a("--out", required=True)
    return p


# ----------------------------------------------------------------------------- inputs


def parse_hw(spec: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--resize must be HxW (e.g. 512x512), got {spec!r}") from None
    if h <= 0 or w <= 0:
        raise ConfigError(f"--resize must be positive, got {spec!r}")
    return h, w


def parse_branching(spec: str) -> int | list[int]:
    try:
        vals = [int(v) for v in str(spec).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--branching must be an int or a list like 3,2; got {spec!r}") \
            from None
    if not vals or any(v < 2 for v in vals):
        raise ConfigError(f"--branching factors must be >= 2, got {spec!r}")
    return vals[0] if len(vals) == 1 else vals


def check_args(args: argparse.Namespace) -> None:
    from vdiff.interpolation import pose_guidance, schemes

    if args.scheme not in schemes.SCHEMES:
        raise ConfigError(f"--scheme must be one of {schemes.SCHEMES}, got {args.scheme!r}")
    if args.shape not in schemes.SHAPES:
        raise ConfigError(f"--shape must be one of {schemes.SHAPES}, got {args.shape!r}")
    if args.control_profile not in pose_guidance.PROFILES:
        raise ConfigError(f"--control_profile must be one of {pose_guidance.PROFILES}")
    if args.num_frames < 2:
        raise ConfigError(f"--num_frames must be >= 2, got {args.num_frames}")
    if args.candidates < 1:
        raise ConfigError("--candidates must be >= 1")
    if args.ddim_steps < 1:
        raise ConfigError("--ddim_steps must be >= 1")
    if not 0 <= args.inversion_steps:
        raise ConfigError("--inversion_steps must be >= 0")
    if not 0.0 <= args.noise_min <= args.noise_max <= 1.0:
        raise ConfigError("need 0 <= --noise_min <= --noise_max <= 1")
    if bool(args.sd) == bool(args.dreampose_run):
        raise ConfigError("pass exactly one model: --sd=DIFFUSERS_SD_FOLDER or "
                          "--dreampose_run=DREAMPOSE_WORKDIR")
    if args.dreampose_run:
        _check_dreampose_args(args)
    else:
        pose = [args.keypoints_a, args.keypoints_b, args.controlnet]
        if any(pose) and not all(pose):
            raise ConfigError("pose guidance needs all of --keypoints_a, --keypoints_b and "
                              "--controlnet")
        if args.controlnet and not os.path.isdir(args.controlnet):
            raise ConfigError(f"ControlNet folder not found: {args.controlnet}")
        if not os.path.isdir(args.sd):
            raise ConfigError(f"Stable Diffusion folder not found: {args.sd} (a diffusers "
                              "layout: unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    if args.clip and not os.path.isdir(args.clip):
        raise ConfigError(f"CLIP folder not found: {args.clip}")
    parse_branching(args.branching)
    if args.dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"--dtype must be float32, bfloat16 or float16, got {args.dtype!r}")


def _check_dreampose_args(args: argparse.Namespace) -> None:
    """A DreamPose run has no text encoder and takes pose natively: the text and ControlNet
    options have nothing to act on, so they are errors rather than silently ignored."""
    from vdiff.interpolation import dreampose_backend

    text = {"--prompt_a": args.prompt_a, "--prompt_b": args.prompt_b,
            "--negative": args.negative, "--controlnet": args.controlnet,
            "--inversion_steps": args.inversion_steps > 0}
    given = [k for k, v in text.items() if v]
    if given:
        raise ConfigError(f"{', '.join(given)}: for --sd models only; a DreamPose run is "
                          "conditioned on the images themselves and on --keypoints_a/_b")
    if not (args.keypoints_a and args.keypoints_b):
        raise ConfigError("--dreampose_run needs --keypoints_a and --keypoints_b (OpenPose "
                          "JSON of the two images): the pose drives the DreamPose model")
    if args.clip and not args.rank_prompt:
        raise ConfigError("CLIP ranking with --dreampose_run needs --rank_prompt (there are "
                          "no prompts to rank against)")
    if args.context_interp not in dreampose_backend.CONTEXT_INTERP:
        raise ConfigError(f"--context_interp must be one of "
                          f"{dreampose_backend.CONTEXT_INTERP}, got {args.context_interp!r}")
    if not os.path.isfile(os.path.join(args.dreampose_run, "config.json")):
        raise ConfigError(f"{args.dreampose_run} holds no DreamPose run (no config.json)")


def load_pair(args) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int]]:
    """(image a, image b) at the working size, and their original sizes."""
    a = load_image(args.image_a, flag="--image_a")
    b = load_image(args.image_b, flag="--image_b")
    sa, sb = a.shape[:2], b.shape[:2]
    if args.resize:
        hw = parse_hw(args.resize)
        a = a if sa == hw else resize_image(a, hw)
        b = b if sb == hw else resize_image(b, hw)
    elif sa != sb:
        raise ConfigError(f"the images have different sizes: {args.image_a} is "
                          f"{sa[1]}x{sa[0]}, {args.image_b} is {sb[1]}x{sb[0]} (WxH); "
                          "pass --resize=HxW to resize both")
    return a, b, sa, sb


# ----------------------------------------------------------------------------- models

# Loaded models and their compiled functions, reused by later `run` calls in one process
# (keyed by paths and settings), so a second invocation from Python compiles nothing new.
_CACHE: dict = {}


def load_models(args: argparse.Namespace):
    """SD (+ ControlNet), tokenizer, the guided denoiser and jitted VAE / text functions."""
    import types

    import jax
    import jax.numpy as jnp

    from vdiff.interpolation import schemes
    from vdiff.interpolation.tokenizer import CLIPTokenizer
    from vdiff.models.sd.latent_diffusion import load_stable_diffusion

    key = ("sd", os.path.abspath(args.sd), args.dtype, args.guidance_scale,
           os.path.abspath(args.controlnet) if args.controlnet else None)
    if key in _CACHE:
        return _CACHE[key]
    dtype = getattr(jnp, args.dtype)
    model = load_stable_diffusion(args.sd, dtype=dtype)
    if model.text_encoder is None:
        raise ConfigError(f"{args.sd} has no text_encoder/ folder")
    tokenizer = CLIPTokenizer.from_folder(os.path.join(args.sd, "tokenizer"))
    controlnet = cn_params = None
    if args.controlnet:
        from vdiff.models.sd.controlnet import load_controlnet
        controlnet, cn_params = load_controlnet(args.controlnet, dtype=dtype)
    denoiser = schemes.TextDenoiser(model, args.guidance_scale, controlnet, cn_params)
    sf, vae, text = model.scaling_factor, model.vae, model.text_encoder
    text_len = min(tokenizer.max_length, text.config.max_position_embeddings)
    encode = jax.jit(lambda p, x: vae.apply({"params": p}, x, method=vae.encode)[0] * sf)
    decode = jax.jit(lambda p, z: jnp.clip(vae.apply({"params": p}, z / sf,
                                                     method=vae.decode), -1.0, 1.0))
    text_fn = jax.jit(lambda p, ids: text.apply({"params": p}, ids).last_hidden_state)
    m = types.SimpleNamespace(
        model=model, tokenizer=tokenizer, denoiser=denoiser,
        # the plain (unguided-by-control) denoiser for textual inversion
        ti_denoiser=schemes.TextDenoiser(model, args.guidance_scale),
        encode_fn=lambda x: encode(model.vae_params, x),
        decode_fn=lambda z: jnp.concatenate([decode(model.vae_params, z[i:i + 1])
                                             for i in range(z.shape[0])]),
        embed=lambda prompt: text_fn(model.text_params,
                                     jnp.asarray(tokenizer(prompt, max_length=text_len)))[0])
    _CACHE[key] = m
    return m


def load_dreampose(args: argparse.Namespace):
    """The DreamPose backend of --dreampose_run (cached like `load_models`)."""
    from vdiff.interpolation import dreampose_backend

    key = ("dreampose", os.path.abspath(args.dreampose_run), args.dtype, args.s_image,
           args.s_pose)
    if key not in _CACHE:
        _CACHE[key] = dreampose_backend.load_dreampose_models(
            args.dreampose_run, s_image=args.s_image, s_pose=args.s_pose, dtype=args.dtype)
    return _CACHE[key]


# ----------------------------------------------------------------------------- main


def run(args: argparse.Namespace, log=print) -> dict:
    import jax
    import jax.numpy as jnp

    from vdiff.data import pose as pose_lib
    from vdiff.data.video_io import to_uint8, write_video
    from vdiff.interpolation import clip_ranking, dreampose_backend, pose_guidance, schemes
    from vdiff.interpolation import textual_inversion as ti

    check_args(args)
    img_a, img_b, size_a, size_b = load_pair(args)
    hw = img_a.shape[:2]
    kps = None
    if args.keypoints_a:
        kps = [pose_lib.load_openpose_json(p) for p in (args.keypoints_a, args.keypoints_b)]
        kps = [pose_guidance.scale_keypoints(k, s, hw)
               for k, s in zip(kps, (size_a, size_b))]

    images = np.stack([img_a, img_b])
    info: dict = {"args": vars(args), "size_hw": list(hw)}
    if args.dreampose_run:
        m = load_dreampose(args)
        if hw[0] % m.factor or hw[1] % m.factor:
            raise ConfigError(f"image size {hw[1]}x{hw[0]} (WxH) must be a multiple of "
                              f"{m.factor} for this model; pass --resize=HxW")
        res = int(m.config.data.resolution)
        if hw != (res, res):
            log(f"note: the DreamPose run was trained at {res}x{res}, the images are "
                f"{hw[1]}x{hw[0]}")
        denoiser, logsnr_fn, decode_fn = m.denoiser, m.logsnr_fn, m.decode_fn
        xa, xb, ctx_a, ctx_b = dreampose_backend.encode_pair(m, images)
        cond_fn = dreampose_backend.dreampose_cond_fn(
            m, ctx_a, ctx_b, kps[0], kps[1], args.num_frames, hw,
            context_interp=args.context_interp)
    else:
        m = load_models(args)
        model, denoiser = m.model, m.denoiser
        factor = model.vae.config.downsample_factor * model.unet.config.down_factor
        if hw[0] % factor or hw[1] % factor:
            raise ConfigError(f"image size {hw[1]}x{hw[0]} (WxH) must be a multiple of "
                              f"{factor} for this model; pass --resize=HxW")
        pos_a, pos_b = m.embed(args.prompt_a), m.embed(args.prompt_b)
        neg = m.embed(args.negative)
        encode_fn, decode_fn = m.encode_fn, m.decode_fn
        if args.inversion_steps > 0:
            settings = ti.InversionSettings(steps=args.inversion_steps,
                                            learning_rate=args.inversion_lr,
                                            guidance_scale=args.guidance_scale,
                                            seed=args.seed)
            t0 = time.time()
            pos_a, pos_b, neg, ti_info = ti.invert_embeddings(
                m.ti_denoiser, encode_fn,
                model.schedule.logsnr, images, pos_a, pos_b, neg, settings,
                cache_dir=args.cache_dir or os.path.join(args.out, "textinv_cache"),
                prompts=(args.prompt_a, args.prompt_b, args.negative),
                model_id=os.path.abspath(args.sd), log=log)
            ti_info["seconds"] = time.time() - t0
            info["textual_inversion"] = ti_info
            log(f"textual inversion: {'cached' if ti_info['cached'] else 'optimised'}, loss "
                f"{ti_info['loss_before']:.4f} -> {ti_info['loss_after']:.4f}")

        extra = None
        if kps is not None:
            extra = pose_guidance.control_cond_fn(kps[0], kps[1], hw,
                                                  strength=args.control_strength,
                                                  profile=args.control_profile)
        cond_fn = schemes.text_cond_fn(pos_a, pos_b, neg, extra)
        logsnr_fn = model.schedule.logsnr
        xa, xb = encode_fn(jnp.asarray(images))

    ranker = None
    if args.clip and args.candidates > 1:
        rank_prompt = args.rank_prompt or ", ".join(p for p in (args.prompt_a, args.prompt_b)
                                                    if p)
        key = (os.path.abspath(args.clip), rank_prompt, args.negative)
        if key not in _CACHE:
            _CACHE[key] = clip_ranking.ClipRanker.from_folder(args.clip, rank_prompt,
                                                              args.negative)
        ranker = _CACHE[key]
    if args.candidates > 1 and ranker is None and not args.interactive and not args.choices:
        log("note: --candidates > 1 without --clip: candidate 0 is kept for every frame")
    cand_dir = os.path.join(args.out, "candidates") if args.interactive else None
    selector = clip_ranking.CandidateSelector(decode_fn, ranker,
                                              clip_ranking.parse_choices(args.choices),
                                              cand_dir)
    interp = schemes.Interpolator(denoiser, logsnr_fn, ddim_steps=args.ddim_steps,
                                  noise_min=args.noise_min, noise_max=args.noise_max,
                                  shape=args.shape, branching=parse_branching(args.branching),
                                  candidates=args.candidates)
    t0 = time.time()
    latents = interp.run(args.scheme, jax.random.key(args.seed), xa, xb, args.num_frames,
                         cond_fn, selector)
    frames = np.array(decode_fn(latents))  # writable copy
    frames[0], frames[-1] = img_a, img_b  # the real images at the ends
    info["sampling_seconds"] = time.time() - t0

    os.makedirs(os.path.join(args.out, "frames"), exist_ok=True)
    import imageio.v3 as iio
    u8 = to_uint8(frames)
    for i, f in enumerate(u8):
        iio.imwrite(os.path.join(args.out, "frames", f"frame_{i:03d}.png"), f)
    video = os.path.join(args.out, "interpolation.mp4")
    write_video(video, u8, fps=args.fps)
    if args.scheme == "interp_denoise":
        info["noise_levels"] = schemes.frame_noise_levels(
            args.num_frames, args.noise_min, args.noise_max, args.shape).tolist()
    elif args.scheme == "did":
        nodes = schemes.did_schedule(args.num_frames, parse_branching(args.branching))
        lv = schemes.depth_noise_levels(schemes.num_depths(nodes), args.noise_min,
                                        args.noise_max, args.shape)
        info["did_schedule"] = [dict(dataclasses.asdict(n), level=float(lv[n.depth]))
                                for n in nodes]
    info["selection"] = {str(k): v for k, v in sorted(selector.record.items())}
    if cand_dir:
        selector.write_json(os.path.join(cand_dir, "scores.json"))
    info["video"] = video
    with open(os.path.join(args.out, "run.json"), "w") as f:
        json.dump(info, f, indent=1, default=str)
    log(f"wrote {video} and {len(u8)} frames in {args.out}/frames")
    return info


@errors.cli
def main(argv=None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
