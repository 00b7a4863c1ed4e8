"""Interpolation with a DreamPose run trained here, in place of Stable Diffusion.

The paper conditions every in-between frame on text embeddings interpolated between the
two images' prompts, plus a ControlNet pose of linearly moved keypoints. A DreamPose model
has no text: its analogue of the prompt is the subject-image context (adapter over CLIP +
VAE tokens), so frame t gets slerp(ctx_a, ctx_b, t); its pose input is native (a 5-frame
window of pose maps concatenated to z_t), so frame t gets the window rendered from the
keypoints interpolated at the positions of frames t−2 … t+2 of the output video (clamped
to [0, 1] at the ends, as `pose.pose_window` clamps at sequence ends in training).

Guidance is DreamPose's own dual classifier-free guidance (`DreamPoseModel.guided_eps`:
ε(∅,∅) + s_I (ε(I,∅) − ε(∅,∅)) + s_p (ε(I,p) − ε(I,∅))). Noise levels: the schemes work
in log-SNR on the continuous t ∈ [0, 1] grid of ``model.schedule.logsnr`` (DreamPose's
discrete SD schedule, t = (i + 1)/N ↔ table entry i), and ``DreamPoseModel.eps`` maps a
log-SNR back to the fractional UNet timestep with ``schedule.timestep`` — the same round
trip `TextDenoiser` makes through ``LatentDiffusion.eps_fn``.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vdiff.data import pose as pose_lib
from vdiff.errors import ConfigError
from vdiff.interpolation import schemes

CONTEXT_INTERP = ("slerp", "lerp")


@dataclasses.dataclass(eq=False)  # hashed by identity: a static jit argument
class DreamPoseDenoiser:
    """`schemes.Denoiser` for a DreamPose model. ``cond``: "context" [B, L, D] (image
    context) and "pose" [B, h, w, 10] (pose window already on the latent grid)."""

    model: Any  # vdiff.models.dreampose.DreamPoseModel
    model_params: Any
    s_image: float = 2.0
    s_pose: float = 4.0

    @property
    def params(self) -> Any:
        return self.model_params

    def eps(self, params, z, logsnr, cond):
        return self.model.guided_eps(params, z, logsnr, cond["context"], cond["pose"],
                                     s_image=self.s_image, s_pose=self.s_pose)


def pose_window_at(kps_a: np.ndarray, kps_b: np.ndarray, pos: float, num_frames: int,
                   size: tuple[int, int], radius: int = 2) -> np.ndarray:
    """[H, W, 2 (2 radius + 1)] pose window of the output frame at ``pos``: pose maps of
    keypoints interpolated at the neighbouring frames' positions (clamped to [0, 1])."""
    a, b = pose_lib.as_coco18(kps_a), pose_lib.as_coco18(kps_b)
    step = 1.0 / max(num_frames - 1, 1)
    ts = np.clip(pos + step * np.arange(-radius, radius + 1), 0.0, 1.0)
    maps = pose_lib.render_pose_uv(pose_lib.interpolate_keypoints(a, b, ts), size)
    return pose_lib.pose_window(maps, radius, radius)  # the middle one's window: all 5


def dreampose_cond_fn(backend: Any, ctx_a: Any, ctx_b: Any, kps_a: np.ndarray,
                      kps_b: np.ndarray, num_frames: int, size: tuple[int, int], *,
                      context_interp: str = "slerp") -> schemes.CondFn:
    """``cond_fn(frame, pos)`` for `Interpolator.run`: the interpolated image context and
    the interpolated pose window (mapped to the latent grid) of that frame."""
    if context_interp not in CONTEXT_INTERP:
        raise ConfigError(f"context interpolation {context_interp!r} is not one of "
                          f"{CONTEXT_INTERP}")
    mix = schemes.slerp if context_interp == "slerp" else schemes.lerp
    ctx_a, ctx_b = jnp.asarray(ctx_a, jnp.float32), jnp.asarray(ctx_b, jnp.float32)
    f = backend.model.downsample_factor
    latent_hw = (size[0] // f, size[1] // f)

    def fn(frame: int, pos: float) -> dict:
        del frame
        window = pose_window_at(kps_a, kps_b, pos, num_frames, size)
        pose = backend.model.pose_to_latent(jnp.asarray(window)[None], latent_hw)[0]
        return {"context": mix(ctx_a, ctx_b, pos), "pose": pose}

    return fn


def make_backend(model: Any, params: Any, *, s_image: float = 2.0, s_pose: float = 4.0,
                 config: Any = None) -> types.SimpleNamespace:
    """Denoiser, jitted encode / decode / image-context functions and the schedule of a
    DreamPose (model, params)."""
    params = jax.tree.map(jnp.asarray, params)
    encode = jax.jit(model.encode)    # posterior mean × scaling factor
    decode = jax.jit(model.decode)    # ÷ scaling factor, VAE decoder, clipped to [−1, 1]
    context = jax.jit(model.image_context)
    return types.SimpleNamespace(
        model=model, params=params, config=config,
        denoiser=DreamPoseDenoiser(model, params, float(s_image), float(s_pose)),
        logsnr_fn=model.schedule.logsnr,
        factor=model.downsample_factor * model.unet.config.down_factor,
        encode_fn=lambda x: encode(params, jnp.asarray(x, jnp.float32)),
        # one image at a time: the compiled shape stays [1, ...] whatever the frame count
        decode_fn=lambda z: jnp.concatenate([decode(params, z[i:i + 1])
                                             for i in range(z.shape[0])]),
        context_fn=lambda x: context(params, jnp.asarray(x, jnp.float32)))


def load_dreampose_models(run_dir: str, *, s_image: float = 2.0, s_pose: float = 4.0,
                          dtype: str | None = None) -> types.SimpleNamespace:
    """`make_backend` of a finished DreamPose run (its last stage's workdir, e.g. the
    demo's WORKDIR/vae): config.json + checkpoint, EMA weights when it kept them."""
    from vdiff.methods import dreampose as method_lib

    config, params = method_lib.load_run(run_dir)
    if config.get("method") not in ("dreampose", "dreampose_vae") or \
            config.dreampose.stage == "vae_pretrain":
        raise ConfigError(f"{run_dir} is not a DreamPose diffusion run (method "
                          f"{config.get('method')!r}, stage {config.dreampose.stage!r}); "
                          "pass a dataset, subject or vae_decoder stage workdir")
    if dtype is not None:
        if dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"DreamPose runs compute in float32 or bfloat16, not {dtype}")
        config.model.dtype = dtype
    model = method_lib.build_model(config)
    return make_backend(model, params, s_image=s_image, s_pose=s_pose, config=config)


def encode_pair(backend: Any, images: Sequence[np.ndarray]) -> tuple[Any, Any, Any, Any]:
    """(latent a, latent b, context a, context b) of two [H, W, 3] images in [−1, 1]."""
    x = np.stack(images).astype(np.float32)
    xa, xb = backend.encode_fn(x)
    ca, cb = backend.context_fn(x)
    return xa, xb, ca, cb
