"""The mesh and the ONE table that maps logical axis names to mesh axes.

Mesh axes: `data` (batch), `fsdp` (batch, and parameters + optimizer state over their `embed` dimension), `tensor`
(heads, MLP and vocabulary dimensions) and `seq` (the length of activations; the attention then runs sequence-parallel,
research/parallel/sequence.py). The config names their sizes: `mesh.data=-1, mesh.fsdp=1, mesh.tensor=1, mesh.seq=1`
(-1 takes the remaining devices); `mesh.shape=(data, fsdp, tensor[, seq])` is the older positional form."""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor", "seq")

LOGICAL_RULES = (
  ("batch", ("data", "fsdp")),
  ("length", "seq"),
  ("embed", "fsdp"),
  ("heads", "tensor"),
  ("kv", None),
  ("mlp", "tensor"),
  ("vocab", "tensor"),
  ("layers", None),
)


def resolve_mesh_shape(shape: Sequence[int], num_devices: int, label: str | None = None) -> tuple[int, ...]:
  """Fill one -1 entry so that the product equals the device count; clear errors (naming `label`, by default
  `mesh.shape=...`) otherwise. Three sizes (the layout before the `seq` axis) mean seq=1."""
  shape = tuple(int(s) for s in shape)
  if len(shape) == len(MESH_AXES) - 1:
    shape = (*shape, 1)
  label = label or f"mesh.shape={shape}"
  if len(shape) != len(MESH_AXES) or shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"{label}; expected {len(MESH_AXES)} positive sizes for {MESH_AXES} (one may be -1)")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"{label} cannot fill {num_devices} devices")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ValueError(f"{label} uses {math.prod(shape)} devices but {num_devices} are present")
  return shape


def config_mesh_sizes(mesh_cfg) -> tuple[tuple[int, ...], str]:
  """(the unresolved sizes of MESH_AXES a config asks for, how to name them in errors): the named sizes
  mesh.data/fsdp/tensor/seq (one may be -1), or `mesh.shape` when set. Setting both is an error: which one was meant
  is not clear."""
  named = {a: mesh_cfg.get(a, 1) for a in MESH_AXES}
  for axis, size in named.items():
    if isinstance(size, bool) or not isinstance(size, int):
      raise ValueError(f"mesh.{axis}={size!r}; expected an integer device count (-1: the remaining devices)")
  shape = mesh_cfg.get("shape")
  if shape is None:
    return tuple(named.values()), ",".join(f"mesh.{a}={n}" for a, n in named.items())
  if named != dict(zip(MESH_AXES, (-1, 1, 1, 1), strict=True)):
    raise ValueError(
      f"mesh.shape={tuple(shape)} and mesh.data/fsdp/tensor/seq={tuple(named.values())} are both "
      "set; use the named sizes alone (e.g. mesh.fsdp=4,mesh.data=-1)"
    )
  shape = tuple(shape) + (1,) * (len(shape) == len(MESH_AXES) - 1)
  return shape, f"mesh.shape={shape}"


def mesh_from_config(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The mesh a config asks for (`config_mesh_sizes`) over `devices` (default: all)."""
  shape, label = config_mesh_sizes(mesh_cfg)
  return make_mesh(shape, devices, label)


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None, label: str | None = None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  shape = resolve_mesh_shape(shape, len(devices), label)
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_sharding(mesh: Mesh, logical_axes: Sequence[str | None]) -> NamedSharding:
  return NamedSharding(mesh, nn.logical_to_mesh_axes(logical_axes, LOGICAL_RULES))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Every batch array is split on its leading axis over (data, fsdp)."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
