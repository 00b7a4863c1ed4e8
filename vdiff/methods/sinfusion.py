"""SinFusion: diffusion models trained on one image or one short video (Nikankin et al. 2023).

Four roles, one class each, all with VDM's method interface (`example_batch`, `init`,
`loss`, `denoiser`, `sample`) so the shared train step and trainer drive them; the network is
always :class:`vdiff.models.nextnet.NextNet` and clean conditioning frames are concatenated
to the noisy frame on channels. Every batch is `{"video": uint8 [B, T, h, w, C]}`: one random
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
(:func:`curriculum_k_range`): k = 1 only at first, widening stage by stage to
k ∈ [−max_k, max_k] \\ {0}; negative k predicts a past frame.

One log-SNR schedule per model (`config.diffusion.schedule`) is stored on the method and
used for training and for every sampler and application (`vdiff.methods.sinfusion_apps`).
"""

from __future__ import annotations

import abc
import os
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vdiff import config_lib, runtime
from vdiff.core.pixels import to_unit_range
from vdiff.diffusion import losses, schedules, targets
from vdiff.errors import ConfigError
from vdiff.methods import sinfusion_apps as apps
from vdiff.methods.base import Method
from vdiff.models.nextnet import NextNet

ROLE_PARAMETERIZATION = {"image": "x0", "projector": "x0", "predictor": "eps",
                         "interpolator": "x0"}
# Whole-workdir entry points (one run per role): vdiff/methods/sinfusion_sampling.py
_APPLICATION = "vdiff.methods.sinfusion_sampling:run_sinfusion_sampling"


# --------------------------------------------------------------------------------------------
# config


def sinfusion_defaults(role: str = "predictor") -> ml_collections.ConfigDict:
    """Every key a SinFusion run reads (train/sample/mesh/sharding as in `vdm_defaults`).

    data (one training video, or one image with num_frames = 1; pipeline keys as in
    `vdm_defaults`, read by the 'single_video' source):
      name            'single_video'
      source_dir      the video file, frame folder or image to train on
      channels        3 (RGB)
      num_frames      T, frames of the training video in every batch (1 for role 'image')
      resolution      shorter frame side after loading (aspect kept)
      frame_size      (H, W) of the frames as loaded — the method's static shapes; its
                      shorter side must equal resolution; (0, 0) = read from the file
      crop_fraction   crop side / frame side (≈ 0.95 in the paper), one crop for all T frames
    model (NextNet):
      width, depth, mult   channels, ConvNeXt blocks, widening of the 3×3 conv pair (64, 16, 2)
      dtype                compute dtype ('float32' | 'bfloat16' | 'float16'); params float32
    diffusion:
      schedule             log-SNR schedule name (schedules.get_schedule), training = sampling
      logsnr_min/max       its clipping range
      parameterization     'eps' | 'x0' | 'v'; '' → the role's default (table in module doc)
      loss_space           '' → the parameterization;  weighting: see diffusion.losses
    sinfusion:
      role                 'image' | 'predictor' | 'projector' | 'interpolator'
      max_k                largest |k| of the Predictor (k ∈ [−max_k, max_k] \\ {0}; table size)
      curriculum_stage_steps  train steps per curriculum stage (0: full range from step 0)
      backward             allow k < 0 from the second stage on (needed for backward extrapolation)
      eta                  DDIM η of all sampling (1: ancestral with the posterior variance, 0: ODE)
      correction_level     t of the Projector's truncated-diffusion correction in applications
      sample_num_frames    frames of the trainer's periodic Predictor samples
      residual             Predictor only (x0 parameterization): the network predicts the
                           change x_{n+k} − x_n, so x̂0 = frame n + output (copying the frame
                           is the zero-output starting point instead of something to learn)
      role_depth           per-role NextNet depth overriding model.depth (0: model.depth),
                           e.g. a shallow Predictor (its receptive field limits the motion it
                           can memorise) beside the paper-depth Projector (whose receptive
                           field sets how diverse its samples are)
      context_frames       Predictor only: clean frames it is conditioned on — 1 (the paper:
                           frame n) or c > 1 (frames n, n − k, …, n − (c−1)·k on channels,
                           so a rollout at stride k feeds back its own last c frames): one
                           frame does not determine its motion, two give its velocity
    sample.num_steps       50 diffusion steps for sampling (the full range t ∈ [0, 1])
    """
    if role not in ROLE_PARAMETERIZATION:
        raise ConfigError(f"unknown sinfusion role {role!r}; "
                          f"known: {sorted(ROLE_PARAMETERIZATION)}")
    base = config_lib.vdm_defaults()
    c = ml_collections.ConfigDict()
    c.method = "sinfusion"
    c.seed = 0
    c.data = base.data
    c.data.update(dict(
        name="single_video", source_dir="", channels=3, num_frames=1 if role == "image" else 16,
        resolution=0, frame_size=(0, 0), crop_fraction=0.95, temporal_crop="first",
        num_images_per_video=0))
    c.model = ml_collections.ConfigDict(dict(width=64, depth=16, mult=2, dtype="auto"))
    c.diffusion = ml_collections.ConfigDict(dict(
        schedule="cosine", logsnr_min=-20.0, logsnr_max=20.0, parameterization="",
        loss_space="", weighting="none"))
    c.sinfusion = ml_collections.ConfigDict(dict(
        role=role, max_k=3, curriculum_stage_steps=2000, backward=True, eta=1.0,
        correction_level=0.25, sample_num_frames=8, residual=False,
        context_frames=1, role_depth=ml_collections.ConfigDict(
            {r: 0 for r in ROLE_PARAMETERIZATION})))
    c.train = base.train
    c.train.batch_size, c.train.num_steps = 8, 50_000
    c.train.lr, c.train.warmup_steps, c.train.ema_decay = 2e-4, 500, 0.995
    c.sample = base.sample
    c.sample.num_samples, c.sample.num_steps = 4, 50
    c.evals = base.evals
    c.mesh = base.mesh
    c.sharding = base.sharding
    return c


def frame_shape(data_config: Any) -> tuple[int, int]:
    """(H, W) = data.frame_size, checked against data.resolution (its shorter side);
    (0, 0) reads it from the source file's header (no decoding)."""
    h, w = (int(v) for v in data_config.frame_size)
    if (h, w) == (0, 0):
        from vdiff.data.single_video import loaded_frame_size

        if not data_config.source_dir:
            raise ConfigError("SinFusion needs data.source_dir: the video or image to train on")
        return loaded_frame_size(data_config.source_dir, resolution=data_config.resolution)
    if data_config.resolution and min(h, w) != data_config.resolution:
        raise ConfigError(f"data.frame_size={(h, w)} must have its shorter side equal to "
                          f"data.resolution={data_config.resolution} (frames are loaded that way)")
    return h, w


def crop_shape(data_config: Any) -> tuple[int, int]:
    """(h, w) = round(crop_fraction · (H, W)), at least 1 pixel each (as the pipeline crops)."""
    f = float(data_config.crop_fraction)
    if not 0.0 < f <= 1.0:
        raise ConfigError(f"data.crop_fraction={f} must be in (0, 1]")
    h, w = frame_shape(data_config)
    return max(1, round(h * f)), max(1, round(w * f))


# --------------------------------------------------------------------------------------------
# frame-difference curriculum (pure jax; `step` is the train state's step)


def curriculum_k_range(step: jax.Array | int | None, *, max_k: int, stage_steps: int,
                       backward: bool = True,
                       num_frames: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Allowed k ∈ [lo, hi] \\ {0} at `step`.

    s = ⌊step / stage_steps⌋,  hi = min(max_k, 1 + s),  lo = −min(max_k, s) (backward) else 1,
    so stage 0 is k = 1 only, stage 1 is {−1, 1, 2}, …, stage ≥ max_k is [−max_k, max_k].
    `step` None or stage_steps = 0 mean the end of the curriculum. With `num_frames` T the
    range is also clipped to |k| ≤ T − 1.
    """
    if max_k < 1:
        raise ValueError(f"max_k must be ≥ 1, got {max_k}")
    if step is None or stage_steps <= 0:
        s = jnp.asarray(max_k, jnp.int32)
    else:
        s = jnp.asarray(step, jnp.int32) // stage_steps
    hi = jnp.minimum(max_k, 1 + s)
    lo = -jnp.minimum(max_k, s) if backward else jnp.ones_like(hi)
    if num_frames is not None:
        hi = jnp.minimum(hi, num_frames - 1)
        lo = jnp.where(lo < 0, jnp.maximum(lo, -(num_frames - 1)), lo)
    return lo.astype(jnp.int32), hi.astype(jnp.int32)


def curriculum_max_k(step: jax.Array | int | None, *, max_k: int, stage_steps: int) -> jax.Array:
    """Largest forward k at `step`: min(max_k, 1 + ⌊step / stage_steps⌋) (max_k for None)."""
    return curriculum_k_range(step, max_k=max_k, stage_steps=stage_steps)[1]


def sample_frame_pair(rng: jax.Array, step: jax.Array | int | None, num_frames: int, *,
                      max_k: int, stage_steps: int, backward: bool = True,
                      context: int = 1) -> tuple[jax.Array, jax.Array]:
    """(n, k), int32 scalars: k uniform on the curriculum's [lo, hi] \\ {0}, then n uniform on
    the frames with n + k and the context frames n, n − k, …, n − (c−1)·k in [0, T): for
    c = 1, n ∈ [max(0, −k), T − 1 − max(0, k)]."""
    if num_frames < 1 + context:
        raise ValueError(f"the Predictor with {context} context frame(s) needs ≥ "
                         f"{1 + context} frames, got {num_frames}")
    # c·|k| ≤ T − 1 keeps at least one valid n
    lo, hi = curriculum_k_range(step, max_k=max_k, stage_steps=stage_steps, backward=backward,
                                num_frames=(num_frames - 1) // context + 1)
    spans_zero = lo <= 0
    count = hi - lo + 1 - spans_zero.astype(jnp.int32)
    rng_k, rng_n = jax.random.split(rng)
    k = lo + jax.random.randint(rng_k, (), 0, count, jnp.int32)
    k = jnp.where(spans_zero & (k >= 0), k + 1, k)
    first = jnp.where(k > 0, (context - 1) * k, -k)
    span = num_frames - context * jnp.abs(k)
    n = first + jax.random.randint(rng_n, (), 0, span, jnp.int32)
    return n, k


# --------------------------------------------------------------------------------------------
# conditioning plumbing (pure functions of float videos [B, T, h, w, C])


class RoleInputs(NamedTuple):
    """What one role trains on: target x0 [B,h,w,C], clean frames [B,h,w,m·C], k [B]."""

    x0: jax.Array
    cond: jax.Array | None = None
    frame_diff: jax.Array | None = None


def frames_at(video: jax.Array, index: jax.Array) -> jax.Array:
    """video[b, index[b]] for every b: [B, T, h, w, C], int [B] → [B, h, w, C]."""
    return jax.vmap(lambda v, i: jax.lax.dynamic_index_in_dim(v, i, 0, keepdims=False))(
        video, jnp.asarray(index, jnp.int32))


def projector_inputs(video: jax.Array, n: jax.Array) -> RoleInputs:
    """Unconditional (image / projector): x0 = frame n."""
    return RoleInputs(x0=frames_at(video, n))


def predictor_inputs(video: jax.Array, n: jax.Array, k: jax.Array,
                     context: int = 1) -> RoleInputs:
    """Predictor: cond = frames n, n − k, …, n − (context−1)·k (clean, on channels, frame n
    first), x0 = frame n + k, frame_diff = k."""
    k = jnp.asarray(k, jnp.int32)
    n = jnp.asarray(n, jnp.int32)
    cond = jnp.concatenate([frames_at(video, n - j * k) for j in range(context)],
                           axis=-1)
    return RoleInputs(x0=frames_at(video, n + k), cond=cond, frame_diff=k)


def interpolator_inputs(video: jax.Array, n: jax.Array) -> RoleInputs:
    """Interpolator: cond = [frame n ‖ frame n + 2] on channels, x0 = frame n + 1."""
    cond = jnp.concatenate([frames_at(video, n), frames_at(video, n + 2)], axis=-1)
    return RoleInputs(x0=frames_at(video, n + 1), cond=cond)


def synthetic_frames(num: int, num_frames: int, height: int, width: int,
                     channels: int) -> jax.Array:
    """Smooth moving blobs in [−1, 1], [num, T, H, W, C]: a stand-in conditioning video for the
    trainer's periodic samples of the conditional roles (real frames go through the apps)."""
    t = jnp.arange(num_frames, dtype=jnp.float32)[None, :, None, None]
    phase = jnp.arange(num, dtype=jnp.float32)[:, None, None, None]
    yy, xx = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                          jnp.arange(width, dtype=jnp.float32), indexing="ij")
    cy = height / 2 + height / 4 * jnp.sin(0.3 * t + phase)
    cx = width / 2 + width / 4 * jnp.cos(0.3 * t + phase)
    blob = jnp.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (min(height, width) / 5) ** 2))
    c = jnp.linspace(0.5, 1.0, channels)
    return 2.0 * blob[..., None] * c - 1.0


# --------------------------------------------------------------------------------------------
# methods


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
        self.eta = float(s.eta)
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
        class conditioning; sampling is DDIM with `sinfusion.eta`).
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


def role_config(config: Any, role: str) -> Any:
    """The config of one role's run: a copy with sinfusion.role set and, when the config
    trains all roles (role 'all'), that role's train.num_steps from sinfusion.role_steps (the
    step decay then halves the lr at each quarter)."""
    c = config.copy_and_resolve_references()
    with c.unlocked():
        steps = c.sinfusion.get("role_steps", {}).get(role) if c.sinfusion.role == "all" else 0
        c.sinfusion.role = role
        if steps:
            c.train.num_steps = int(steps)
            if c.train.lr_schedule == "step":
                c.train.lr_decay_every = max(1, int(steps) // 4)
        if role == "image":
            c.data.num_frames = 1
        depth = int(c.sinfusion.get("role_depth", {}).get(role, 0))  # absent: older configs
        if depth:
            c.model.depth = depth
    return c


def training_runs(config: Any, workdir: str) -> list[tuple[Any, str]]:
    """(config, workdir) per role to train: role 'all' → predictor, projector, interpolator."""
    role = config.sinfusion.role
    roles = ("predictor", "projector", "interpolator") if role == "all" else (role,)
    return [(role_config(config, r), os.path.join(workdir, r)) for r in roles]
