"""Multi-head attention core shared by the SD UNet, VAE, CLIP and ControlNet.

Each caller owns its projections (named like the PyTorch ones, so weights convert);
this function only splits heads and runs `jax.nn.dot_product_attention` with the
configured implementation ("cudnn" or None for XLA), falling back to XLA where cuDNN
cannot run — the same switch as the VDM UNet's attention.
"""

from __future__ import annotations

import einops
import jax
import jax.numpy as jnp

from vdiff.nn.attention import usable_implementation


def multihead_attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, *, num_heads: int,
                        implementation: str | None = None, is_causal: bool = False,
                        mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """softmax(q kᵀ / √d) v per head. q [B, Lq, C], k / v [B, Lk, C] → [B, Lq, C].

    mask: optional bool, broadcastable to [B, heads, Lq, Lk], True = may attend.
    """
    q, k, v = (einops.rearrange(t, "b l (h d) -> b l h d", h=num_heads) for t in (q, k, v))
    impl = usable_implementation(implementation, q, k)
    if mask is not None:
        impl = None  # keep boolean masks on the XLA path
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal,
                                       implementation=impl)
    return einops.rearrange(out, "b l h d -> b l (h d)")
