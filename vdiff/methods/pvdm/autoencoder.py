"""PVDM stage 1, ``pvdm_ae``: the projected autoencoder (`vdiff.models.pvdm_autoencoder`) on
the shared `train_step` and trainer, and what the latent stage shares with it
(`build_autoencoder`, `check_clip_data`). The loss is

    L = w₁ |x − x̂|₁ + w_p LPIPS(x, x̂)                              (reconstruction)
      + g(step) λ L_G(x̂),   L_G = −D₂(x̂) − D₃(x̂)                  (generator, hinge)
      + g(step) L_D,  L_D = Σ_{D ∈ {D₂, D₃}} relu(1 − D(x)) + relu(1 + D(sg x̂))

with a per-frame 2D and a 3D patch discriminator, g(step) = 1[step ≥ gan_start_step]. The
generator term sees the discriminators through stop-gradient and the discriminator term
sees x̂ through stop-gradient, so one gradient of L gives each parameter group exactly its
own objective; the two groups get their own Adam (`optimizer`: one optax
`multi_transform` in one train state). The adversarial weight λ is

    'adaptive':  λ = w_adv · ‖∇_x̂ L_rec‖ / (‖∇_x̂ L_G‖ + 10⁻⁴), clipped to [0, adaptive_max]
    'scheduled': λ = w_adv · min(1, (step − gan_start_step) / gan_ramp_steps)

The adaptive rule is VQGAN's balance measured at the decoder *output* rather than at its
last weight matrix: both losses reach the parameters through the same decoder Jacobian, so
balancing their pixel gradients is a cheap proxy that needs no second backward pass
through the network, and λ can never let L_G dominate the reconstruction.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vdiff import runtime
from vdiff.core.pixels import to_unit_range
from vdiff.errors import ConfigError
from vdiff.methods.base import Method
from vdiff.models import triplane
from vdiff.models.pvdm_autoencoder import PVDMAutoencoder
from vdiff.models.pvdm_discriminators import (PatchDiscriminator2D, PatchDiscriminator3D,
                                              hinge_d_loss, hinge_g_loss)
from vdiff.train.state import make_optimizer


def build_autoencoder(model_config: Any, channels: int) -> PVDMAutoencoder:
    m = model_config
    return PVDMAutoencoder(
        patch_size=int(m.patch_size), latent_channels=int(m.latent_channels),
        width=int(m.width), encoder_depth=int(m.encoder_depth),
        decoder_depth=int(m.decoder_depth), projection_depth=int(m.projection_depth),
        head_dim=int(m.head_dim), mlp_ratio=float(m.mlp_ratio), channels=int(channels),
        remat=bool(m.remat), attention_impl=runtime.attention_impl(m.attention_impl),
        dtype=runtime.compute_dtype(m.dtype))


def to_rgb(x: jax.Array) -> jax.Array:
    """Grey frames repeated to three channels (LPIPS is an RGB network)."""
    return jnp.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def check_clip_data(config: Any, frames: int) -> None:
    """Both stages train on clips only (no extra images), `frames` frames per example."""
    d = config.data
    if int(d.num_images_per_video):
        raise ConfigError("PVDM trains on clips only: set data.num_images_per_video=0")
    if int(d.num_frames) != frames:
        raise ConfigError(f"data.num_frames={d.num_frames} but this PVDM stage needs "
                          f"{frames} frames per example")


class PVDMAutoencoderStage(Method):
    """`pvdm_ae`: reconstruction (L1 + LPIPS) and an optional adversarial stage."""

    applications: dict[str, str] = {}
    application_hint = ("the PVDM autoencoder stage generates nothing: sample from a pvdm_ldm "
                        "run, or use --mode=eval for reconstruction PSNR/LPIPS")
    evaluators = ("pvdm_reconstruction",)

    def __init__(self, config: Any):
        self.config = config
        self.channels = int(config.data.channels)
        self.num_frames = int(config.data.num_frames)
        self.resolution = int(config.data.resolution)
        check_clip_data(config, self.num_frames)
        if self.resolution % int(config.model.patch_size):
            raise ConfigError(f"data.resolution={self.resolution} is not divisible by "
                              f"model.patch_size={config.model.patch_size}")
        self.model = build_autoencoder(config.model, self.channels)
        p = config.pvdm
        self.gan = int(p.gan_start_step) >= 0
        if p.gan_weight_mode not in ("adaptive", "scheduled"):
            raise ConfigError(f"pvdm.gan_weight_mode {p.gan_weight_mode!r}: use 'adaptive' "
                              "or 'scheduled'")
        dt = runtime.compute_dtype(config.model.dtype)
        self.disc2d = PatchDiscriminator2D(int(p.disc_channels), int(p.disc_layers), dtype=dt)
        self.disc3d = PatchDiscriminator3D(int(p.disc_channels), int(p.disc_layers), dtype=dt)
        self.lpips_weight = float(p.lpips_weight)
        if self.lpips_weight:
            from vdiff.eval import lpips

            if self.resolution < lpips.MIN_SIZE[p.lpips_net]:
                raise ConfigError(f"LPIPS-{p.lpips_net} needs frames of at least "
                                  f"{lpips.MIN_SIZE[p.lpips_net]} px (data.resolution="
                                  f"{self.resolution}); set pvdm.lpips_weight=0")
            self.lpips_model = lpips.LPIPS(p.lpips_net)
            self.lpips_params = lpips.load_params(p.lpips_net)

    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        r = self.resolution
        return {"video": np.zeros((batch_size, self.num_frames, r, r, self.channels), np.uint8),
                "label": np.zeros((batch_size,), np.int32)}

    def optimizer(self, train_config: Any) -> tuple[optax.GradientTransformation, Any]:
        """Adam(W) from `train` for the autoencoder, GAN-style Adam for the discriminators."""
        tx, schedule = make_optimizer(train_config)
        p = self.config.pvdm
        disc = optax.chain(optax.clip_by_global_norm(float(train_config.grad_clip or 1e9)),
                           optax.adam(float(p.disc_lr), b1=float(p.disc_b1),
                                      b2=float(p.disc_b2)))
        labels = lambda params: {k: ("autoencoder" if k == "autoencoder" else "disc")  # noqa: E731
                                 for k in params}
        return optax.multi_transform({"autoencoder": tx, "disc": disc}, labels), schedule

    def init(self, rng: jax.Array, batch: dict[str, Any]) -> Any:
        video = to_unit_range(batch["video"])
        r_ae, r_2d, r_3d = jax.random.split(rng, 3)
        params = {"autoencoder": self.model.init({"params": r_ae}, video)["params"]}
        if self.gan:
            params["disc2d"] = self.disc2d.init({"params": r_2d}, video)["params"]
            params["disc3d"] = self.disc3d.init({"params": r_3d}, video)["params"]
        return params

    # -- pieces ------------------------------------------------------------
    def encode(self, params: Any, video: jax.Array) -> triplane.Triplane:
        return self.model.apply({"params": params["autoencoder"]}, video,
                                method=self.model.encode)

    def decode(self, params: Any, planes: triplane.Triplane) -> jax.Array:
        return self.model.apply({"params": params["autoencoder"]}, planes,
                                method=self.model.decode)

    def lpips(self, x: jax.Array, y: jax.Array, rng: jax.Array | None) -> jax.Array:
        """Mean LPIPS over `lpips_frames` random frames (the same ones for x and y)."""
        n = int(self.config.pvdm.lpips_frames)
        if n and n < x.shape[1] and rng is not None:
            idx = jax.random.choice(rng, x.shape[1], (n,), replace=False)
            x, y = x[:, idx], y[:, idx]
        flat = lambda v: to_rgb(v.reshape(-1, *v.shape[2:]))  # noqa: E731
        return jnp.mean(self.lpips_model.apply({"params": self.lpips_params}, flat(x), flat(y)))

    def reconstruction_loss(self, x: jax.Array, recon: jax.Array,
                            rng: jax.Array | None) -> tuple[jax.Array, dict[str, jax.Array]]:
        l1 = jnp.mean(jnp.abs(x - recon))
        total = float(self.config.pvdm.l1_weight) * l1
        metrics = {"l1": l1}
        if self.lpips_weight:
            lp = self.lpips(x, recon, rng)
            total = total + self.lpips_weight * lp
            metrics["lpips"] = lp
        return total, metrics

    def _logits(self, params: Any, video: jax.Array) -> tuple[jax.Array, jax.Array]:
        return (self.disc2d.apply({"params": params["disc2d"]}, video),
                self.disc3d.apply({"params": params["disc3d"]}, video))

    def adversarial_weight(self, x: jax.Array, recon: jax.Array, disc_params: Any,
                           rng: jax.Array, step: jax.Array) -> jax.Array:
        p = self.config.pvdm
        if p.gan_weight_mode == "scheduled":
            ramp = (step - int(p.gan_start_step)) / max(int(p.gan_ramp_steps), 1)
            return float(p.gan_weight) * jnp.clip(ramp, 0.0, 1.0)
        r = jax.lax.stop_gradient(recon)
        g_rec = jax.grad(lambda v: self.reconstruction_loss(x, v, rng)[0])(r)
        g_adv = jax.grad(lambda v: self.generator_loss(disc_params, v))(r)
        ratio = jnp.linalg.norm(g_rec) / (jnp.linalg.norm(g_adv) + 1e-4)
        return float(p.gan_weight) * jnp.clip(jax.lax.stop_gradient(ratio), 0.0,
                                              float(p.adaptive_max_weight))

    def generator_loss(self, disc_params: Any, recon: jax.Array) -> jax.Array:
        f2, f3 = self._logits(disc_params, recon)
        return hinge_g_loss(f2) + hinge_g_loss(f3)

    # -- training ----------------------------------------------------------
    def loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array, *,
             train: bool = True, step: jax.Array | None = None
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        with jax.named_scope("pvdm_ae_loss"):
            x = to_unit_range(batch["video"])
            rng_lpips, rng_noise = jax.random.split(rng)
            planes = self.encode(params, x)
            latent_abs_mean = jnp.mean(jnp.stack([jnp.mean(jnp.abs(z)) for z in planes]))
            sigma = float(self.config.pvdm.latent_noise)
            if sigma and train:
                noise = jax.random.split(rng_noise, len(planes))
                planes = triplane.Triplane(*(
                    z + sigma * jax.random.normal(r, z.shape, z.dtype)
                    for z, r in zip(planes, noise)))
            recon = self.decode(params, planes)
            total, metrics = self.reconstruction_loss(x, recon, rng_lpips)
            metrics["psnr"] = jnp.mean(
                10 * jnp.log10(4.0 / jnp.maximum(jnp.mean((x - recon) ** 2, (1, 2, 3, 4)), 1e-10)))
            metrics["latent_abs_mean"] = latent_abs_mean
            if self.gan:
                step = jnp.asarray(jnp.iinfo(jnp.int32).max if step is None else step)
                on = (step >= int(self.config.pvdm.gan_start_step)).astype(jnp.float32)
                frozen = jax.lax.stop_gradient({k: params[k] for k in ("disc2d", "disc3d")})
                g_loss = self.generator_loss(frozen, recon)
                weight = self.adversarial_weight(x, recon, frozen, rng_lpips, step)
                r2, r3 = self._logits(params, x)
                f2, f3 = self._logits(params, jax.lax.stop_gradient(recon))
                d_loss = hinge_d_loss(r2, f2) + hinge_d_loss(r3, f3)
                total = total + on * (weight * g_loss + d_loss)
                metrics.update(g_loss=g_loss, d_loss=d_loss, adv_weight=weight * on,
                               logits_real=0.5 * (jnp.mean(r2) + jnp.mean(r3)),
                               logits_fake=0.5 * (jnp.mean(f2) + jnp.mean(f3)))
        return total, metrics

    # -- periodic samples ----------------------------------------------------
    def sample(self, params: Any, rng: jax.Array, *, num_samples: int, **unused: Any) -> jax.Array:
        """Held-out clips next to their reconstructions (side by side), [N, S, H, 2W, C]."""
        del rng, unused
        clips = to_unit_range(jnp.asarray(held_out_clips(self.config, num_samples)))
        recon = self.model.apply({"params": params["autoencoder"]}, clips)[0]
        return jnp.concatenate([clips, jnp.clip(recon, -1, 1)], axis=3)


def held_out_clips(config: Any, num: int, *, split: str = "test", seed: int = 0) -> np.ndarray:
    """`num` uint8 clips [num, T, R, R, C] of `split` (deterministic, no augmentation)."""
    from vdiff.data import pipeline

    return pipeline.take_clips(config.data, num, split=split, seed=seed, random_flip=False,
                               temporal_crop="first")
