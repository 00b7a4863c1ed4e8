"""One interpolation run between two real images: inputs, models, the scheme, the outputs.

`run(settings)` is what both entry points call: the `interpolate` application of the
`interpolation` method (`python -m vdiff.main --config=configs/interpolation.py
--mode=sample --application=interpolate`) and `python -m vdiff.interpolation.cli`.

The model is a diffusers Stable Diffusion folder (`sd`: text prompts, textual inversion,
optional ControlNet pose guidance) or a DreamPose run trained here (`dreampose_run`: the
image contexts of the two images are interpolated in place of text embeddings and the
interpolated keypoints drive its pose input; dual guidance `s_image` / `s_pose`).

Writes OUT/interpolation.mp4, OUT/frames/frame_NNN.png and OUT/run.json (settings,
per-frame noise levels, textual inversion losses, CLIP scores and picks). With
`interactive` also OUT/candidates/frame_NNN/cand_C.png and OUT/candidates/scores.json;
rerun with choices=FRAME:CAND,... to keep chosen candidates.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from vdiff.core.pixels import load_image, resize_image
from vdiff.errors import ConfigError
from vdiff.interpolation.settings import Settings, check, parse_branching, parse_hw


def load_pair(s: Settings) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int]]:
    """(image a, image b) at the working size, and their original sizes."""
    a = load_image(s.image_a, flag="image_a")
    b = load_image(s.image_b, flag="image_b")
    sa, sb = a.shape[:2], b.shape[:2]
    if s.resize:
        hw = parse_hw(s.resize)
        a = a if sa == hw else resize_image(a, hw)
        b = b if sb == hw else resize_image(b, hw)
    elif sa != sb:
        raise ConfigError(f"the images have different sizes: {s.image_a} is "
                          f"{sa[1]}x{sa[0]}, {s.image_b} is {sb[1]}x{sb[0]} (WxH); "
                          "set resize=HxW to resize both")
    return a, b, sa, sb


# Loaded models and their compiled functions, reused by later `run` calls in one process
# (keyed by paths and settings), so a second run from Python compiles nothing new.
_CACHE: dict = {}


def load_models(s: Settings):
    """SD (+ ControlNet), tokenizer, the guided denoiser and jitted VAE / text functions."""
    import types

    import jax
    import jax.numpy as jnp

    from vdiff.interpolation import schemes
    from vdiff.interpolation.tokenizer import CLIPTokenizer
    from vdiff.models.sd.latent_diffusion import load_stable_diffusion

    key = ("sd", os.path.abspath(s.sd), s.dtype, s.guidance_scale,
           os.path.abspath(s.controlnet) if s.controlnet else None)
    if key in _CACHE:
        return _CACHE[key]
    dtype = getattr(jnp, s.dtype)
    model = load_stable_diffusion(s.sd, dtype=dtype)
    if model.text_encoder is None:
        raise ConfigError(f"{s.sd} has no text_encoder/ folder")
    tokenizer = CLIPTokenizer.from_folder(os.path.join(s.sd, "tokenizer"))
    controlnet = cn_params = None
    if s.controlnet:
        from vdiff.models.sd.controlnet import load_controlnet
        controlnet, cn_params = load_controlnet(s.controlnet, dtype=dtype)
    denoiser = schemes.TextDenoiser(model, s.guidance_scale, controlnet, cn_params)
    sf, vae, text = model.scaling_factor, model.vae, model.text_encoder
    text_len = min(tokenizer.max_length, text.config.max_position_embeddings)
    encode = jax.jit(lambda p, x: vae.apply({"params": p}, x, method=vae.encode)[0] * sf)
    decode = jax.jit(lambda p, z: jnp.clip(vae.apply({"params": p}, z / sf,
                                                     method=vae.decode), -1.0, 1.0))
    text_fn = jax.jit(lambda p, ids: text.apply({"params": p}, ids).last_hidden_state)
    m = types.SimpleNamespace(
        model=model, tokenizer=tokenizer, denoiser=denoiser,
        # the plain (unguided-by-control) denoiser for textual inversion
        ti_denoiser=schemes.TextDenoiser(model, s.guidance_scale),
        encode_fn=lambda x: encode(model.vae_params, x),
        decode_fn=lambda z: jnp.concatenate([decode(model.vae_params, z[i:i + 1])
                                             for i in range(z.shape[0])]),
        embed=lambda prompt: text_fn(model.text_params,
                                     jnp.asarray(tokenizer(prompt, max_length=text_len)))[0])
    _CACHE[key] = m
    return m


def load_dreampose(s: Settings):
    """The DreamPose backend of `dreampose_run` (cached like `load_models`)."""
    from vdiff.interpolation import dreampose_backend

    key = ("dreampose", os.path.abspath(s.dreampose_run), s.dtype, s.s_image, s.s_pose)
    if key not in _CACHE:
        _CACHE[key] = dreampose_backend.load_dreampose_models(
            s.dreampose_run, s_image=s.s_image, s_pose=s.s_pose, dtype=s.dtype)
    return _CACHE[key]


def _check_size(hw: tuple[int, int], factor: int) -> None:
    if hw[0] % factor or hw[1] % factor:
        raise ConfigError(f"image size {hw[1]}x{hw[0]} (WxH) must be a multiple of "
                          f"{factor} for this model; set resize=HxW")


def _sd_conditioning(s: Settings, images: np.ndarray, kps, info: dict, log: Callable):
    """(denoiser, logsnr_fn, decode_fn, latent a, latent b, cond_fn) of an SD model, with
    textual inversion when asked for (its record goes to `info`)."""
    import jax.numpy as jnp

    from vdiff.interpolation import pose_guidance, schemes
    from vdiff.interpolation import textual_inversion as ti

    m = load_models(s)
    model = m.model
    hw = images.shape[1:3]
    _check_size(hw, model.vae.config.downsample_factor * model.unet.config.down_factor)
    pos_a, pos_b, neg = m.embed(s.prompt_a), m.embed(s.prompt_b), m.embed(s.negative)
    if s.inversion_steps > 0:
        settings = ti.InversionSettings(steps=s.inversion_steps, learning_rate=s.inversion_lr,
                                        guidance_scale=s.guidance_scale, seed=s.seed)
        t0 = time.time()
        pos_a, pos_b, neg, ti_info = ti.invert_embeddings(
            m.ti_denoiser, m.encode_fn, model.schedule.logsnr, images, pos_a, pos_b, neg,
            settings, cache_dir=s.cache_dir or os.path.join(s.out, "textinv_cache"),
            prompts=(s.prompt_a, s.prompt_b, s.negative), model_id=os.path.abspath(s.sd),
            log=log)
        ti_info["seconds"] = time.time() - t0
        info["textual_inversion"] = ti_info
        log(f"textual inversion: {'cached' if ti_info['cached'] else 'optimised'}, loss "
            f"{ti_info['loss_before']:.4f} -> {ti_info['loss_after']:.4f}")
    extra = None
    if kps is not None:
        extra = pose_guidance.control_cond_fn(kps[0], kps[1], hw, strength=s.control_strength,
                                              profile=s.control_profile)
    xa, xb = m.encode_fn(jnp.asarray(images))
    return (m.denoiser, model.schedule.logsnr, m.decode_fn, xa, xb,
            schemes.text_cond_fn(pos_a, pos_b, neg, extra))


def _dreampose_conditioning(s: Settings, images: np.ndarray, kps, log: Callable):
    """(denoiser, logsnr_fn, decode_fn, latent a, latent b, cond_fn) of a DreamPose run."""
    from vdiff.interpolation import dreampose_backend

    m = load_dreampose(s)
    hw = images.shape[1:3]
    _check_size(hw, m.factor)
    res = int(m.config.data.resolution)
    if hw != (res, res):
        log(f"note: the DreamPose run was trained at {res}x{res}, the images are "
            f"{hw[1]}x{hw[0]}")
    xa, xb, ctx_a, ctx_b = dreampose_backend.encode_pair(m, images)
    cond_fn = dreampose_backend.dreampose_cond_fn(m, ctx_a, ctx_b, kps[0], kps[1],
                                                  s.num_frames, hw,
                                                  context_interp=s.context_interp)
    return m.denoiser, m.logsnr_fn, m.decode_fn, xa, xb, cond_fn


def _selector(s: Settings, decode_fn: Callable, log: Callable):
    """The candidate selector: forced choices, else the CLIP ranker's pick, else candidate 0."""
    from vdiff.interpolation import clip_ranking

    ranker = None
    if s.clip and s.candidates > 1:
        rank_prompt = s.rank_prompt or ", ".join(p for p in (s.prompt_a, s.prompt_b) if p)
        key = (os.path.abspath(s.clip), rank_prompt, s.negative)
        if key not in _CACHE:
            _CACHE[key] = clip_ranking.ClipRanker.from_folder(s.clip, rank_prompt, s.negative)
        ranker = _CACHE[key]
    if s.candidates > 1 and ranker is None and not s.interactive and not s.choices:
        log("note: candidates > 1 without clip: candidate 0 is kept for every frame")
    cand_dir = os.path.join(s.out, "candidates") if s.interactive else None
    return clip_ranking.CandidateSelector(decode_fn, ranker,
                                          clip_ranking.parse_choices(s.choices), cand_dir)


def run(settings: Settings | Any, log: Callable[[str], Any] = print) -> dict:
    """Runs one interpolation and writes its outputs under `settings.out`; returns what
    run.json holds. `settings` is a `Settings` or anything with its fields as attributes
    (the CLI's parsed arguments)."""
    import imageio.v3 as iio
    import jax

    from vdiff.data import pose as pose_lib
    from vdiff.data.video_io import to_uint8, write_video
    from vdiff.interpolation import pose_guidance, schemes

    s = settings if isinstance(settings, Settings) else Settings(**vars(settings))
    check(s)
    img_a, img_b, size_a, size_b = load_pair(s)
    hw = img_a.shape[:2]
    kps = None
    if s.keypoints_a:
        kps = [pose_lib.load_openpose_json(p) for p in (s.keypoints_a, s.keypoints_b)]
        kps = [pose_guidance.scale_keypoints(k, size, hw)
               for k, size in zip(kps, (size_a, size_b))]

    images = np.stack([img_a, img_b])
    info: dict = {"args": dataclasses.asdict(s), "size_hw": list(hw)}
    if s.dreampose_run:
        denoiser, logsnr_fn, decode_fn, xa, xb, cond_fn = _dreampose_conditioning(
            s, images, kps, log)
    else:
        denoiser, logsnr_fn, decode_fn, xa, xb, cond_fn = _sd_conditioning(
            s, images, kps, info, log)
    selector = _selector(s, decode_fn, log)
    branching = parse_branching(s.branching)
    interp = schemes.Interpolator(denoiser, logsnr_fn, ddim_steps=s.ddim_steps,
                                  noise_min=s.noise_min, noise_max=s.noise_max,
                                  shape=s.shape, branching=branching, candidates=s.candidates)
    t0 = time.time()
    latents = interp.run(s.scheme, jax.random.key(s.seed), xa, xb, s.num_frames, cond_fn,
                         selector)
    frames = np.array(decode_fn(latents))  # writable copy
    frames[0], frames[-1] = img_a, img_b  # the real images at the ends
    info["sampling_seconds"] = time.time() - t0

    os.makedirs(os.path.join(s.out, "frames"), exist_ok=True)
    u8 = to_uint8(frames)
    for i, f in enumerate(u8):
        iio.imwrite(os.path.join(s.out, "frames", f"frame_{i:03d}.png"), f)
    video = os.path.join(s.out, "interpolation.mp4")
    write_video(video, u8, fps=s.fps)
    if s.scheme == "interp_denoise":
        info["noise_levels"] = schemes.frame_noise_levels(
            s.num_frames, s.noise_min, s.noise_max, s.shape).tolist()
    elif s.scheme == "did":
        nodes = schemes.did_schedule(s.num_frames, branching)
        lv = schemes.depth_noise_levels(schemes.num_depths(nodes), s.noise_min, s.noise_max,
                                        s.shape)
        info["did_schedule"] = [dict(dataclasses.asdict(n), level=float(lv[n.depth]))
                                for n in nodes]
    info["selection"] = {str(k): v for k, v in sorted(selector.record.items())}
    if s.interactive:
        selector.write_json(os.path.join(s.out, "candidates", "scores.json"))
    info["video"] = video
    with open(os.path.join(s.out, "run.json"), "w") as f:
        json.dump(info, f, indent=1, default=str)
    log(f"wrote {video} and {len(u8)} frames in {s.out}/frames")
    return info
