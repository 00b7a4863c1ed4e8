"""The SinFusion roles (Nikankin et al. 2023): one method class each, and `SinFusionModel`,
the registered class of method 'sinfusion', whose `create` picks the role's class.

All have VDM's method interface (`example_batch`, `init`, `loss`, `denoiser`, `sample`) so
the shared train step and trainer drive them; the network is always
:class:`vdiff.models.nextnet.NextNet` and clean conditioning frames are concatenated to the
noisy frame on channels. Every batch is `{"video": uint8 [B, T, h, w, C]}`: one random
spatial crop (≈ `data.crop_fraction` of the frame) of all T frames of the training video.

=============== ======================================== ============ ==================
role            network input  [z_t ‖ clean frames]      target       parameterization
=============== ======================================== ============ ==================
image           z_t of the crop (T = 1)                  the crop     x0
projector       z_t of frame n, n ~ U{0..T−1}            frame n      x0
predictor       z_t of frame n+k ‖ frame n;  k embedded  frame n+k    eps
interpolator    z_t of frame n+1 ‖ frames n, n+2         frame n+1    x0
=============== ======================================== ============ ==================

The Predictor's frame difference follows a curriculum driven by the train state's step
(`vdiff.methods.sinfusion.curriculum`): k = 1 only at first, widening stage by stage to
k ∈ [−max_k, max_k] \\ {0}; negative k predicts a past frame.

One log-SNR schedule per model (`config.diffusion.schedule`) is stored on the method and
used for training and for every sampler and application (`vdiff.methods.sinfusion.apps`).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from vdiff import runtime
from vdiff.core.pixels import to_unit_range
from vdiff.diffusion import losses, schedules, targets
from vdiff.errors import ConfigError
from vdiff.methods.base import Method
from vdiff.methods.sinfusion import apps
from vdiff.methods.sinfusion.config import (ROLE_PARAMETERIZATION, crop_shape, frame_shape,
                                            training_runs)
from vdiff.methods.sinfusion.curriculum import curriculum_max_k, sample_frame_pair
from vdiff.methods.sinfusion.inputs import (RoleInputs, interpolator_inputs, predictor_inputs,
                                            projector_inputs, synthetic_frames)
from vdiff.models.nextnet import NextNet

# Whole-workdir entry points (one run per role): vdiff/methods/sinfusion/sampling.py
_APPLICATION = "vdiff.methods.sinfusion.sampling:run_sinfusion_sampling"


class SinFusionModel(Method):
    """Shared machinery of the four roles; subclasses set the role and `training_inputs`.

    The registered class of method 'sinfusion': `create` picks the role class, `runs` trains
    one run per role (WORKDIR/<role>), and the applications and `--mode=eval` take the whole
    workdir, restoring the roles they need."""

    role: ClassVar[str] = ""
    min_frames: ClassVar[int] = 1
    uses_frame_diff: ClassVar[bool] = False
    num_classes: int = 0  # for shared helpers that read it (no class conditioning)
    applications = {name: _APPLICATION
                    for name in ("images", "edit", "video", "extrapolate", "upsample")}
    workdir_evaluation = "vdiff.eval.run_eval:evaluate_sinfusion"

    @classmethod
    def create(cls, config: Any) -> SinFusionModel:
        """The role class named by `config.sinfusion.role`, built from `config`."""
        role = config.sinfusion.role
        if role not in ROLES:
            raise ConfigError(f"unknown sinfusion.role {role!r}; known: {sorted(ROLES)}")
        return ROLES[role](config)

    @classmethod
    def runs(cls, config: Any, workdir: str) -> list[tuple[Any, str]]:
        return training_runs(config, workdir)

    def __init__(self, config: Any):
        self.config = config
        d, m, s = config.data, config.model, config.sinfusion
        self.channels = int(d.channels)
        self.num_frames = int(d.num_frames)
        if self.num_frames < self.min_frames:
            raise ConfigError(f"sinfusion role {self.role!r} needs data.num_frames ≥ "
                              f"{self.min_frames}, got {self.num_frames}")
        self.max_k = int(s.max_k)
        if self.uses_frame_diff and self.max_k < 1:
            raise ConfigError(f"sinfusion.max_k must be ≥ 1, got {self.max_k}")
        self.model = NextNet(out_channels=self.channels, width=m.width, depth=m.depth,
                             mult=m.mult, max_k=self.max_k if self.uses_frame_diff else 0,
                             dtype=runtime.compute_dtype(m.dtype))
        diff = config.diffusion
        self.parameterization = diff.parameterization or ROLE_PARAMETERIZATION[self.role]
        self.loss_space = diff.loss_space or self.parameterization
        targets.check_parameterization(self.parameterization)
        targets.check_parameterization(self.loss_space)
        # Only the Predictor has a frame to be residual to; other roles ignore the flag so
        # one config can train all roles.
        self.residual = bool(s.get("residual", False)) and self.role == "predictor"
        if self.residual and self.parameterization != "x0":
            raise ConfigError("sinfusion.residual needs diffusion.parameterization='x0' "
                              f"(got {self.parameterization!r})")
        self.context = int(s.get("context_frames", 1)) if self.role == "predictor" else 1
        if self.context < 1:
            raise ConfigError(f"sinfusion.context_frames must be ≥ 1, got {self.context}")
        if self.role == "predictor" and self.num_frames < 1 + self.context:
            raise ConfigError(f"the Predictor with sinfusion.context_frames={self.context} "
                              f"needs data.num_frames ≥ {1 + self.context}, got "
                              f"{self.num_frames}")
        self.weighting = diff.weighting
        self.schedule = schedules.get_schedule(
            diff.schedule, logsnr_min=diff.logsnr_min, logsnr_max=diff.logsnr_max)
        self.num_sample_steps = int(config.sample.num_steps)
        self.eta = apps.eta_of_sampler(config.sample.get("sampler", "ancestral"), s.eta)
        self.correction_level = float(s.correction_level)

    # -- shapes -------------------------------------------------------------
    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        """Zeros shaped like a pipeline batch: one crop of all T frames per example (the
        pipeline's `label` rides along unused)."""
        h, w = crop_shape(self.config.data)
        return {"video": np.zeros((batch_size, self.num_frames, h, w, self.channels), np.uint8),
                "label": np.zeros((batch_size,), np.int32)}

    # -- network ------------------------------------------------------------
    @abc.abstractmethod
    def training_inputs(self, video: jax.Array, rng: jax.Array,
                        step: jax.Array | int | None) -> RoleInputs:
        """Role-specific (x0, cond, k) from a float video batch [B, T, h, w, C]."""

    def apply(self, params: Any, z: jax.Array, logsnr: jax.Array, *,
              cond: jax.Array | None = None, frame_diff: jax.Array | None = None) -> jax.Array:
        """Network output (in `parameterization`) for noisy z [B,H,W,C] and clean frames cond
        (a residual Predictor adds its input frame: the output is x̂0 itself)."""
        x = z if cond is None else jnp.concatenate([z, cond.astype(z.dtype)], axis=-1)
        out = self.model.apply({"params": params}, x, logsnr, frame_diff)
        # residual to frame n: the first `channels` of cond (later ones: more context frames)
        return out + cond[..., :self.channels].astype(out.dtype) if self.residual else out

    def init(self, rng: jax.Array, batch: dict[str, Any]) -> Any:
        """Parameters (with logical-partitioning boxes) for a batch of this shape."""
        video = to_unit_range(batch["video"])
        inputs = self.training_inputs(video, jax.random.key(0), None)
        x = inputs.x0 if inputs.cond is None else jnp.concatenate([inputs.x0, inputs.cond], -1)
        logsnr = jnp.zeros((x.shape[0],), jnp.float32)
        return self.model.init({"params": rng}, x, logsnr, inputs.frame_diff)["params"]

    # -- training -----------------------------------------------------------
    def loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array, *,
             train: bool = True,
             step: jax.Array | int | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """E_{t, ε}[w(λ) ‖f(α x0 + σ ε, λ, cond, k) − target‖²] over the role's frames.

        `step` (the train state's step) drives the Predictor's k-curriculum; None means the
        end of the curriculum (full k range). `train` is unused (NextNet has no dropout).
        """
        del train
        with jax.named_scope(f"sinfusion_{self.role}_loss"):
            video = to_unit_range(batch["video"])
            rng_in, rng_t, rng_eps = jax.random.split(rng, 3)
            inputs = self.training_inputs(video, rng_in, step)
            x0 = inputs.x0
            _, logsnr = losses.sample_logsnr(rng=rng_t, batch_size=x0.shape[0],
                                             schedule=self.schedule)
            eps = jax.random.normal(rng_eps, x0.shape, jnp.float32)
            z = targets.q_sample(x0=x0, eps=eps, logsnr=logsnr)
            out = self.apply(params, z, logsnr, cond=inputs.cond, frame_diff=inputs.frame_diff)
            per_example = losses.diffusion_loss(
                x0=x0, eps=eps, logsnr=logsnr, model_output=out,
                parameterization=self.parameterization, loss_space=self.loss_space,
                weighting=self.weighting)
            metrics = {"logsnr_mean": jnp.mean(logsnr), **self.extra_metrics(inputs, step)}
        return jnp.mean(per_example), metrics

    def extra_metrics(self, inputs: RoleInputs, step: Any) -> dict[str, jax.Array]:
        del inputs, step
        return {}

    # -- sampling -----------------------------------------------------------
    def denoiser(self, params: Any, *, cond: jax.Array | None = None,
                 frame_diff: jax.Array | int | None = None):
        """`denoise_fn(z, logsnr) -> x̂0` with the clean frames `cond` (and k) held fixed."""
        if self.uses_frame_diff and frame_diff is None:
            raise ValueError("the Predictor needs frame_diff (k)")

        def denoise_fn(z: jax.Array, logsnr: jax.Array) -> jax.Array:
            k = None
            if self.uses_frame_diff:
                k = jnp.broadcast_to(jnp.asarray(frame_diff, jnp.int32), (z.shape[0],))
            out = self.apply(params, z, logsnr, cond=cond, frame_diff=k)
            x0_hat, _ = targets.predictions(z=z, model_output=out, logsnr=logsnr,
                                            parameterization=self.parameterization)
            return x0_hat

        return denoise_fn

    def frame_shape(self) -> tuple[int, int]:
        """Full training-frame size (H, W): the default output size."""
        return frame_shape(self.config.data)

    @abc.abstractmethod
    def sample(self, params: Any, rng: jax.Array, *, num_samples: int,
               num_steps: int | None = None, guidance_scale: float = 0.0,
               gamma: float = 0.3, video: jax.Array | None = None) -> jax.Array:
        """Periodic training samples [N, T', H, W, C] in [−1, 1] (trainer's entry point).

        `guidance_scale` and `gamma` are accepted for the trainer's call and ignored (no
        class conditioning; sampling is DDIM with η from `sample.sampler`, `eta_of_sampler`).
        """


class SinFusionImage(SinFusionModel):
    """Single-image model: x0 prediction on random crops of the one image (T = 1)."""

    role = "image"

    def training_inputs(self, video, rng, step):
        del step
        n = jax.random.randint(rng, (video.shape[0],), 0, video.shape[1], jnp.int32)
        return projector_inputs(video, n)

    def sample(self, params, rng, *, num_samples, num_steps=None, guidance_scale=0.0,
               gamma=0.3, video=None):
        """Images at the full frame size, [N, 1, H, W, C]."""
        del guidance_scale, gamma, video
        h, w = self.frame_shape()
        images = apps.generate_images(self, params, rng, num_samples, h, w, num_steps=num_steps)
        return images[:, None]


class SinFusionProjector(SinFusionImage):
    """Projector: the single-image model over a random frame of the video (x0 prediction)."""

    role = "projector"


class SinFusionPredictor(SinFusionModel):
    """Predictor: frame n + k from clean frame n (ε prediction), k from the curriculum."""

    role = "predictor"
    min_frames = 2
    uses_frame_diff = True
    evaluators = ("sinfusion_next_frame",)

    def frame_pair(self, rng: jax.Array, step: Any, batch_size: int) -> tuple[jax.Array, jax.Array]:
        """(n, k), each int32 [B], one independent draw per example."""
        s = self.config.sinfusion
        draw = lambda r: sample_frame_pair(  # noqa: E731
            r, step, self.num_frames, max_k=self.max_k,
            stage_steps=int(s.curriculum_stage_steps), backward=bool(s.backward),
            context=self.context)
        return jax.vmap(draw)(jax.random.split(rng, batch_size))

    def training_inputs(self, video, rng, step):
        n, k = self.frame_pair(rng, step, video.shape[0])
        return predictor_inputs(video, n, k, self.context)

    def extra_metrics(self, inputs, step):
        s = self.config.sinfusion
        max_k = curriculum_max_k(step, max_k=self.max_k, stage_steps=int(s.curriculum_stage_steps))
        return {"k_abs_mean": jnp.mean(jnp.abs(inputs.frame_diff).astype(jnp.float32)),
                "curriculum_max_k": max_k.astype(jnp.float32)}

    def sample(self, params, rng, *, num_samples, num_steps=None, guidance_scale=0.0,
               gamma=0.3, video=None):
        """Predictor-only rollouts (k = 1, no Projector) from frame 0 of `video` [N, T, H, W, C]
        (default: synthetic blobs), `sinfusion.sample_num_frames` frames each."""
        del guidance_scale, gamma
        h, w = self.frame_shape()
        if video is None:
            video = synthetic_frames(num_samples, 1, h, w, self.channels)
        length = int(self.config.sinfusion.sample_num_frames)
        rngs = jax.random.split(rng, num_samples)
        roll = lambda r, f: apps.generate_video(  # noqa: E731
            self, None, params, None, r, f, length, k=1, num_steps=num_steps)
        return jax.vmap(roll)(rngs, video[:num_samples, 0])


class SinFusionInterpolator(SinFusionModel):
    """Interpolator: frame n + 1 from clean frames n and n + 2 (x0 prediction)."""

    role = "interpolator"
    min_frames = 3

    def training_inputs(self, video, rng, step):
        del step
        n = jax.random.randint(rng, (video.shape[0],), 0, video.shape[1] - 2, jnp.int32)
        return interpolator_inputs(video, n)

    def sample(self, params, rng, *, num_samples, num_steps=None, guidance_scale=0.0,
               gamma=0.3, video=None):
        """[N, 3, H, W, C]: frames 0 and 2 of `video` (default: synthetic blobs) around the
        interpolated middle frame."""
        del guidance_scale, gamma
        h, w = self.frame_shape()
        if video is None:
            video = synthetic_frames(num_samples, 3, h, w, self.channels)
        ends = video[:num_samples, 0:3:2]
        cond = jnp.concatenate([ends[:, 0], ends[:, 1]], axis=-1)
        mid = apps.sample_frames(self, params, rng, ends[:, 0].shape, cond=cond,
                                 num_steps=num_steps)
        return jnp.stack([ends[:, 0], mid, ends[:, 1]], axis=1)


ROLES: dict[str, type[SinFusionModel]] = {
    "image": SinFusionImage,
    "projector": SinFusionProjector,
    "predictor": SinFusionPredictor,
    "interpolator": SinFusionInterpolator,
}


def make_sinfusion(config: Any) -> SinFusionModel:
    """The role class named by `config.sinfusion.role`, built from `config`."""
    return SinFusionModel.create(config)
