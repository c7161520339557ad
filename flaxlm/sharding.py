"""The mesh, the one logical-axis rules table, and the conversion of host batches to global arrays.

Every parameter carries logical axis names (`logical_axes` metadata on `nnx.Param`), and key
activations are constrained with `constrain`. This module alone decides which mesh axis a logical
name lands on, so changing a parallelism strategy is a change to `RULES`, not to the model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from flaxlm.errors import FlaxlmError

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axes it is sharded over (None: replicated).
# Batch rows are split over every data-parallel axis; fsdp additionally shards parameters along
# their embedding dimension (gathered per layer by XLA); tensor splits heads, MLP and vocabulary.
RULES: Mapping[str, tuple[str, ...] | str | None] = {
    "batch": ("data", "fsdp"),
    "length": None,
    "embed": "fsdp",
    "act_embed": None,
    "heads": "tensor",
    "kv": None,
    "mlp": "tensor",
    "vocab": "tensor",
    "positions": None,
    "types": None,
    "norm": None,
    "predictions": None,
    "labels": None,  # classifier outputs: a handful per model
}


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = -1  # -1: every device not used by fsdp and tensor
    fsdp: int = 1
    tensor: int = 1


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    sizes = [config.data, config.fsdp, config.tensor]
    if sizes.count(-1) > 1:
        raise FlaxlmError("at most one of mesh.data, mesh.fsdp, mesh.tensor may be -1")
    fixed = math.prod(s for s in sizes if s != -1)
    if any(s == 0 or s < -1 for s in sizes):
        raise FlaxlmError(f"mesh sizes must be positive or -1, got data={config.data} "
                          f"fsdp={config.fsdp} tensor={config.tensor}")
    if -1 in sizes:
        if n % fixed:
            raise FlaxlmError(f"mesh fsdp×tensor={fixed} does not divide the {n} devices")
        sizes[sizes.index(-1)] = n // fixed
    if math.prod(sizes) != n:
        raise FlaxlmError(f"mesh data×fsdp×tensor={math.prod(sizes)} (data={sizes[0]}, "
                          f"fsdp={sizes[1]}, tensor={sizes[2]}) must equal the {n} devices")
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None) -> P:
    """PartitionSpec for an array with these logical axes.

    With `shape` and `mesh`, a dimension that the mesh axes do not divide evenly stays replicated
    (e.g. XLM-R's 250,002-row vocabulary on a 4-way tensor axis) instead of failing to compile.
    """
    spec = []
    used: set[str] = set()
    for i, name in enumerate(logical_axes):
        if name is None:
            spec.append(None)
            continue
        if name not in RULES:
            raise ValueError(f"logical axis {name!r} has no sharding rule")
        target = RULES[name]
        axes = (target, ) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used)
        if mesh is not None:
            axes = tuple(a for a in axes if mesh.shape[a] > 1)
            if shape is not None and axes and shape[i] % math.prod(mesh.shape[a] for a in axes):
                axes = ()
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return P(*spec)


def named_sharding(mesh: Mesh, logical_axes: Sequence[str | None],
                   shape: Sequence[int] | None = None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(logical_axes, shape, mesh))


def activation_spec(shape, logical_axes: Sequence[str | None]) -> P | None:
    """PartitionSpec of an activation under the current (abstract) mesh; None outside a mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        return None
    spec = []
    used: set[str] = set()
    for dim, name in zip(shape, logical_axes):
        target = RULES.get(name) if name else None
        axes = (target, ) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used and mesh.shape.get(a, 1) > 1)
        if axes and dim % math.prod(mesh.shape[a] for a in axes):
            axes = ()
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return P(*spec)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """Sharding constraint for an activation, a no-op outside a mesh context."""
    spec = activation_spec(x.shape, logical_axes)
    return x if spec is None else jax.lax.with_sharding_constraint(x, spec)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def host_batch_to_global(mesh: Mesh, host_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """The one place that turns this process's rows into globally sharded arrays."""
    return {
        key: jax.make_array_from_process_local_data(batch_sharding(mesh, value.ndim), value)
        for key, value in host_batch.items()
    }
