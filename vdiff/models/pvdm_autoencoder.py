"""PVDM's projected video autoencoder (Yu et al., CVPR 2023, arXiv 2302.07685).

A clip x ∈ [S, H, W, 3] is cut into p×p patches per frame, giving a 3D grid of tokens
(S, H′, W′) with H′ = H/p, W′ = W/p. A TimeSformer-style encoder (divided space-time
attention) turns the grid into a 3D latent u ∈ [S, H′, W′, D]; three small transformers
then project one axis each out of u, so the video becomes three image-like planes
(`vdiff.models.triplane.Triplane`):

    z^s_{ij} = tanh(A_s(u_{·ij}))  ∈ [H′, W′, C]   (time projected out: content)
    z^h_{tj} = tanh(A_h(u_{t·j}))  ∈ [S,  W′, C]   (height projected out)
    z^w_{ti} = tanh(A_w(u_{ti·}))  ∈ [S,  H′, C]   (width projected out)

Each A prepends a summary token to the L tokens of its line (L = S, H′ or W′), runs
`projection_depth` pre-LN transformer blocks over that one axis, and reads the summary
token out through LN → Dense → tanh. The summary token starts as ū + c, the line's mean
plus a learned vector c, so A begins as mean pooling and attention learns a better
pooling. The tanh bounds the latents to (−1, 1), which keeps the scale of the diffusion
model's data fixed without a KL term.

The decoder sees voxel (t, i, j) as [z^s_{ij}, z^h_{tj}, z^w_{ti}] ∈ 3C
(`compose_volume`), embeds it to D, runs `decoder_depth` video blocks and maps every
token back to its p×p×3 patch. A video block is

    x ← x + Attn_time(LN x)        (over S at each (i, j))
    x ← x + Attn_space(LN x)       (over H′W′ within each frame)
    x ← x + MLP(LN x)              (GELU, hidden mlp_ratio·D)

Positions enter once, at the encoder and decoder inputs, as factorized learned
embeddings e_t + e_i + e_j, sized from the clip seen at init (PVDM trains at one clip
size). Attention output projections are zero-initialised (`HeadsAttention`), so at init
every attention branch is the identity; the mean-seeded summary token is what makes a
fresh encoder's planes depend on the video (a bare learned token would read out a
constant until those projections move).

    planes = model.apply(v, video, method=model.encode)   # video: [B, S, H, W, 3] in [−1, 1]
    recon = model.apply(v, planes, method=model.decode)   # [B, S, H, W, 3] float32
    recon, planes = model.apply(v, video)
"""

from __future__ import annotations

from typing import Any

import einops
import flax.linen as nn
import jax.numpy as jnp

from vdiff.models.triplane import Triplane, compose_volume
from vdiff.nn import partitioning as P
from vdiff.nn.attention import HeadsAttention
from vdiff.nn.layers import default_init

embedding_init = nn.initializers.normal(0.02)


class LayerNorm(nn.Module):
    """LayerNorm over channels with float32 statistics, returned in the compute dtype."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return nn.LayerNorm(dtype=jnp.float32)(x.astype(jnp.float32)).astype(self.dtype)


class MLP(nn.Module):
    """Dense → GELU → Dense, hidden width mlp_ratio × channels."""

    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        channels = x.shape[-1]
        h = nn.Dense(int(self.mlp_ratio * channels), dtype=self.dtype, name="fc1",
                     kernel_init=P.partitioned(default_init, (P.EMBED, P.MLP)))(x)
        h = nn.gelu(h)
        return nn.Dense(channels, dtype=self.dtype, name="fc2",
                        kernel_init=P.partitioned(default_init, (P.MLP, P.EMBED)))(h)


class VideoTransformerBlock(nn.Module):
    """Divided space-time block on x [B, S, H′, W′, D]: time attention, space attention, MLP.

    Dividing the attention keeps the cost at O(S² + (H′W′)²) per token instead of
    O((S H′ W′)²), which is what makes 16×32×32 token grids affordable.
    """

    width: int
    head_dim: int = 64
    mlp_ratio: float = 4.0
    attention_impl: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        b, s, h, w, d = x.shape
        if d != self.width:
            raise ValueError(f"VideoTransformerBlock(width={self.width}) got {d} channels")
        x = x.astype(self.dtype)
        tokens = einops.rearrange(LayerNorm(self.dtype, name="norm_time")(x),
                                  "b s h w d -> (b h w) s d")
        out = HeadsAttention(self.head_dim, self.attention_impl, self.dtype,
                             name="attn_time")(tokens)
        x = P.constrain_video(x + einops.rearrange(out, "(b h w) s d -> b s h w d", b=b, h=h, w=w))

        tokens = einops.rearrange(LayerNorm(self.dtype, name="norm_space")(x),
                                  "b s h w d -> (b s) (h w) d")
        out = HeadsAttention(self.head_dim, self.attention_impl, self.dtype,
                             name="attn_space")(tokens)
        x = P.constrain_video(x + einops.rearrange(out, "(b s) (h w) d -> b s h w d", b=b, h=h))

        out = MLP(self.mlp_ratio, self.dtype, name="mlp")(LayerNorm(self.dtype, name="norm_mlp")(x))
        return P.constrain_video(x + out)


class TransformerBlock(nn.Module):
    """Pre-LN attention over axis 1 of [N, L, D] tokens + MLP, both residual."""

    head_dim: int = 64
    mlp_ratio: float = 4.0
    attention_impl: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = x.astype(self.dtype)
        x = x + HeadsAttention(self.head_dim, self.attention_impl, self.dtype, name="attn")(
            LayerNorm(self.dtype, name="norm_attn")(x))
        return x + MLP(self.mlp_ratio, self.dtype, name="mlp")(
            LayerNorm(self.dtype, name="norm_mlp")(x))


class AxisProjection(nn.Module):
    """Projects one axis out: tokens [N, L, D] → bounded latent [N, latent_channels].

    The summary token (mean of the line + a learned vector) attends to the L tokens of
    its line (a CLS-token readout), so the projection is a learned, input-dependent
    pooling that starts out as the mean.
    """

    latent_channels: int
    depth: int = 2
    head_dim: int = 64
    mlp_ratio: float = 4.0
    attention_impl: str | None = None
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens: jnp.ndarray) -> jnp.ndarray:
        n, _, d = tokens.shape
        summary = self.param("summary", P.partitioned(embedding_init, (P.EMBED,)), (d,),
                             jnp.float32)
        tokens = tokens.astype(self.dtype)
        seed = jnp.mean(tokens.astype(jnp.float32), axis=1, keepdims=True) + summary
        x = jnp.concatenate([seed.astype(self.dtype), tokens], axis=1)
        block = nn.remat(TransformerBlock) if self.remat else TransformerBlock
        for i in range(self.depth):
            x = block(self.head_dim, self.mlp_ratio, self.attention_impl, self.dtype,
                      name=f"block_{i}")(x)
        out = LayerNorm(self.dtype, name="norm_out")(x[:, 0])
        out = nn.Dense(self.latent_channels, dtype=self.dtype, name="to_latent",
                       kernel_init=P.partitioned(default_init, (P.EMBED, P.MLP)))(out)
        return jnp.tanh(out.astype(jnp.float32))


class FactorizedPositionEmbedding(nn.Module):
    """Adds e_t + e_i + e_j to x [B, S, H′, W′, D]; tables sized from the grid seen at init.

    Factorizing costs (S + H′ + W′)·D parameters instead of S·H′·W′·D and still gives
    every token a distinct position.
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        _, s, h, w, d = x.shape
        init = P.partitioned(embedding_init, (None, P.EMBED))
        time = self.param("time", init, (s, d), jnp.float32)
        height = self.param("height", init, (h, d), jnp.float32)
        width = self.param("width", init, (w, d), jnp.float32)
        pos = time[:, None, None] + height[None, :, None] + width[None, None, :]
        return x + pos.astype(self.dtype)[None]


class PVDMAutoencoder(nn.Module):
    """Video ↔ triplane autoencoder; see the module docstring for the maths and usage."""

    patch_size: int = 8
    latent_channels: int = 4
    width: int = 384
    encoder_depth: int = 8
    decoder_depth: int = 8
    projection_depth: int = 2
    head_dim: int = 64
    mlp_ratio: float = 4.0
    channels: int = 3
    remat: bool = False
    attention_impl: str | None = None  # None/'xla' or 'cudnn'
    dtype: Any = jnp.float32

    def setup(self):
        # setup (not compact) so encode and decode are separately callable via `method=`.
        block = nn.remat(VideoTransformerBlock) if self.remat else VideoTransformerBlock

        def dense(features: int) -> nn.Dense:
            return nn.Dense(features, dtype=self.dtype,
                            kernel_init=P.partitioned(default_init, (P.EMBED, P.MLP)))

        def projection() -> AxisProjection:
            return AxisProjection(self.latent_channels, self.projection_depth, self.head_dim,
                                  self.mlp_ratio, self.attention_impl, self.remat, self.dtype)

        def video_blocks(depth: int) -> list[nn.Module]:
            return [block(self.width, self.head_dim, self.mlp_ratio, self.attention_impl,
                          self.dtype) for _ in range(depth)]

        # Submodule names come from the attributes (lists become encoder_blocks_0, ...).
        self.patch_embed = dense(self.width)
        self.encoder_pos = FactorizedPositionEmbedding(self.dtype)
        self.encoder_blocks = video_blocks(self.encoder_depth)
        self.encoder_norm = LayerNorm(self.dtype)
        self.project_s = projection()
        self.project_h = projection()
        self.project_w = projection()

        self.latent_embed = dense(self.width)
        self.decoder_pos = FactorizedPositionEmbedding(self.dtype)
        self.decoder_blocks = video_blocks(self.decoder_depth)
        self.decoder_norm = LayerNorm(self.dtype)
        # Normal (not zero) init: a zero head would give the GAN and perceptual losses a
        # constant grey first reconstruction with no gradient signal through the decoder.
        self.to_pixels = dense(self.patch_size ** 2 * self.channels)

    def encode(self, video: jnp.ndarray) -> Triplane:
        """video [B, S, H, W, channels] in [−1, 1] → planes with values in (−1, 1)."""
        if video.ndim != 5 or video.shape[-1] != self.channels:
            raise ValueError(f"expected video [B, S, H, W, {self.channels}], got {video.shape}")
        b, s, height, width, _ = video.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"frame size {height}x{width} is not divisible by the patch size {p}")
        x = einops.rearrange(video.astype(self.dtype), "b s (h p) (w q) c -> b s h w (p q c)",
                             p=p, q=p)
        x = self.encoder_pos(self.patch_embed(x))
        for blk in self.encoder_blocks:
            x = blk(x)
        u = self.encoder_norm(x)  # [B, S, H′, W′, D]
        hp, wp = u.shape[2], u.shape[3]
        z_s = self.project_s(einops.rearrange(u, "b s h w d -> (b h w) s d"))
        z_h = self.project_h(einops.rearrange(u, "b s h w d -> (b s w) h d"))
        z_w = self.project_w(einops.rearrange(u, "b s h w d -> (b s h) w d"))
        return Triplane(s=z_s.reshape(b, hp, wp, -1), h=z_h.reshape(b, s, wp, -1),
                        w=z_w.reshape(b, s, hp, -1))

    def decode(self, planes: Triplane) -> jnp.ndarray:
        """Planes → reconstruction [B, S, H′p, W′p, channels] in float32."""
        x = compose_volume(Triplane(*(z.astype(self.dtype) for z in planes)))
        x = self.decoder_pos(self.latent_embed(x))
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.to_pixels(self.decoder_norm(x))
        p = self.patch_size
        return einops.rearrange(x.astype(jnp.float32), "b s h w (p q c) -> b s (h p) (w q) c",
                                p=p, q=p)

    def __call__(self, video: jnp.ndarray) -> tuple[jnp.ndarray, Triplane]:
        planes = self.encode(video)
        return self.decode(planes), planes
