"""Noise-level and class embeddings."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vdiff.nn import partitioning as P


def logsnr_to_unit_time(logsnr: jnp.ndarray) -> jnp.ndarray:
    """Maps log-SNR λ ∈ ℝ to t = (2/π)·arctan(exp(−λ/2)) ∈ (0, 1).

    This is the inverse of the unclipped cosine schedule, so the network sees a
    bounded, smooth coordinate whatever schedule trained it (λ=+∞ → 0, λ=−∞ → 1).
    """
    return jnp.arctan(jnp.exp(-0.5 * logsnr)) * (2.0 / math.pi)


def sinusoidal_embedding(x: jnp.ndarray, dim: int, *, max_period: float = 10_000.0) -> jnp.ndarray:
    """Transformer-style sin/cos features of a real scalar, shape x.shape + (dim,)."""
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = x.astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class ConditioningEmbedding(nn.Module):
    """Per-frame conditioning vector from the noise level and an optional class label.

    Labels equal to `num_classes` are the learned null class used for classifier-free
    guidance. Conditioning is per frame so that images packed after a video in joint
    training can carry their own class.
    """

    dim: int
    num_classes: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, logsnr: jnp.ndarray, labels: jnp.ndarray | None, num_frames: int) -> jnp.ndarray:
        batch = logsnr.shape[0]
        if logsnr.ndim == 1:
            logsnr = jnp.broadcast_to(logsnr[:, None], (batch, num_frames))
        t = logsnr_to_unit_time(logsnr) * 1000.0
        emb = sinusoidal_embedding(t, self.dim // 4 * 2)
        dense = lambda name: nn.Dense(  # noqa: E731
            self.dim, dtype=self.dtype, name=name,
            kernel_init=P.partitioned(nn.initializers.lecun_normal(), (P.EMBED, P.MLP)))
        emb = dense("time_in")(emb)
        emb = dense("time_out")(nn.swish(emb))
        if self.num_classes:
            if labels is None:
                raise ValueError("this model is class-conditional: pass labels "
                                 f"(use {self.num_classes} for the null class)")
            if labels.ndim == 1:
                labels = jnp.broadcast_to(labels[:, None], (batch, num_frames))
            # Unit-scale entries, as large as the time embedding: Adam moves each entry by
            # about lr per step, so from N(0, 0.02²) the class signal stays drowned by the
            # time signal for thousands of steps (a class-conditional latent model ignored
            # its class after 2k steps; benchmarks/studies/class_conditioning_synthetic.py).
            table = nn.Embed(
                self.num_classes + 1, self.dim, dtype=self.dtype, name="class_embed",
                embedding_init=P.partitioned(nn.initializers.normal(1.0), (P.VOCAB, P.MLP)))
            emb = emb + table(labels)
        return emb  # [B, F, dim]
