"""The mesh and the ONE table that maps logical axis names to mesh axes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES = (
  ("batch", ("data", "fsdp")),
  ("length", None),
  ("embed", "fsdp"),
  ("heads", "tensor"),
  ("kv", None),
  ("mlp", "tensor"),
  ("vocab", "tensor"),
  ("layers", None),
)


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Fill one -1 entry so that the product equals the device count; clear errors otherwise."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES) or shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh.shape={shape}; expected {len(MESH_AXES)} positive sizes for {MESH_AXES} (one may be -1)")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"mesh.shape={shape} cannot fill {num_devices} devices")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ValueError(f"mesh.shape={shape} uses {math.prod(shape)} devices but {num_devices} are present")
  return shape


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  shape = resolve_mesh_shape(shape, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_sharding(mesh: Mesh, logical_axes: Sequence[str | None]) -> NamedSharding:
  return NamedSharding(mesh, nn.logical_to_mesh_axes(logical_axes, LOGICAL_RULES))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Every batch array is split on its leading axis over (data, fsdp)."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
