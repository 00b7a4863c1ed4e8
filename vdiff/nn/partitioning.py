"""Logical axis names shared by every network, so sharding rules live in configs.

Parameters are annotated with these names via `nn.with_logical_partitioning`; the
mesh axes they map to come from `config.sharding.logical_axis_rules` (see
`vdiff.train.sharding`). Keeping the vocabulary in one place stops each model from
inventing its own names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn

# Parameter axes.
EMBED = "embed"  # input features of a kernel (FSDP shards this one)
MLP = "mlp"  # output features of a kernel (tensor parallelism shards this one)
HEADS = "heads"  # attention heads × head dim (tensor parallelism)
VOCAB = "vocab"  # embedding tables (class embeddings)
# Activation axes.
BATCH = "batch"
FRAMES = "frames"
CHANNELS = "channels"


def partitioned(
    init: Callable[..., Any], axes: Sequence[str | None]
) -> Callable[..., Any]:
    """Wraps an initializer so the created parameter carries logical axis names."""
    return nn.with_logical_partitioning(init, tuple(axes))


def constrain_video(x: Any) -> Any:
    """Pins a [B, F, H, W, C] activation to the batch sharding (no-op without a mesh)."""
    return nn.with_logical_constraint(x, (BATCH, FRAMES, None, None, CHANNELS))
