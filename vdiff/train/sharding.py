"""Device mesh and sharding from the config: declared, never hand-placed.

Mesh vocabulary (one place): `data` (pure data parallel), `fsdp` (data parallel
with parameters/optimizer state sharded), `tensor` (model parallel over output
features/heads). A size of −1 fills the remaining devices. Parameters get their
sharding from logical axis names (`vdiff.nn.partitioning`) mapped by
`config.sharding.logical_axis_rules`; the batch is split over (`data`, `fsdp`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from vdiff.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", None),
    ("frames", None),
    ("channels", None),
)


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Replaces a single −1 by whatever fills `num_devices`; checks the product."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(MESH_AXES):
        raise ConfigError(f"mesh shape {shape} must give one size per axis {MESH_AXES}")
    if shape.count(-1) > 1:
        raise ConfigError(f"mesh shape {shape}: at most one axis may be -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ConfigError(f"mesh shape {shape} cannot fill {num_devices} devices")
        shape = tuple(num_devices // known if s == -1 else s for s in shape)
    if math.prod(shape) != num_devices:
        raise ConfigError(f"mesh shape {shape} uses {math.prod(shape)} devices, "
                         f"but {num_devices} are available; use -1 for one axis to fill")
    return shape


def make_mesh(shape: Sequence[int], devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh over all (or the given) devices with Auto axis types (GSPMD propagation)."""
    devices = list(jax.devices() if devices is None else devices)
    wanted = math.prod(int(s) for s in shape)
    if -1 not in shape and wanted < len(devices) and jax.process_count() == 1:
        # An explicit smaller mesh (e.g. (1, 1, 1) for a small model) runs on the first
        # devices of a single process; across processes every device must take part.
        logging.warning("mesh %s uses %d of %d devices", tuple(shape), wanted, len(devices))
        devices = devices[:wanted]
    sizes = resolve_mesh_shape(shape, len(devices))
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def rules_from_config(rules: Sequence[Sequence[Any]] | None) -> tuple[tuple[str, Any], ...]:
    """Normalizes config rules (lists from ml_collections) to tuples of tuples."""
    if not rules:
        return DEFAULT_RULES
    out = []
    for name, axes in rules:
        out.append((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes))
    return tuple(out)


def _fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh, where: str) -> PartitionSpec:
    """Drops mesh axes from dims they do not divide (those dims are replicated instead)."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = math.prod(mesh.shape[a] for a in names)
        if names and dim % size:
            logging.debug("%s: dim %d not divisible by mesh axes %s; replicating", where, dim, names)
            fitted.append(None)
        else:
            fitted.append(axes)
    return PartitionSpec(*fitted)


def strip_boxes(tree: Any) -> Any:
    """Removes `nn.Partitioned` boxes without adding sharding constraints."""
    return jax.tree.map(
        lambda x: x.unbox(apply_constraint=False) if isinstance(x, nn.meta.AxisMetadata) else x,
        tree, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


def logical_shardings(abstract_boxed: Any, mesh: Mesh, rules: Sequence[Any]) -> Any:
    """Shardings for a pytree whose leaves may be `nn.LogicallyPartitioned` boxes.

    The result has the structure of the *unboxed* tree.
    """
    logical_specs = nn.get_partition_spec(abstract_boxed)
    mesh_specs = nn.logical_to_mesh(logical_specs, rules)
    shapes = strip_boxes(abstract_boxed)

    def to_sharding(path, spec, leaf):
        spec = spec if isinstance(spec, PartitionSpec) else PartitionSpec()
        return NamedSharding(mesh, _fit_spec(spec, leaf.shape, mesh, jax.tree_util.keystr(path)))

    return jax.tree_util.tree_map_with_path(
        to_sharding, mesh_specs, shapes,
        is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading axis split over the data axes, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def round_up_to_data_parallel(n: int, mesh: Mesh) -> int:
    """Smallest multiple of the data-parallel size ≥ n (sample batches are sharded over it)."""
    dp = data_parallel_size(mesh)
    return -(-n // dp) * dp


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host-local numpy batch → global jax.Arrays sharded over the data axes."""
    return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), v)
            for k, v in local_batch.items()}
