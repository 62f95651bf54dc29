"""Multi-process runs through JAX's own distributed runtime: one process per host (or several on one CPU machine).

  # host i of N (GPU cluster: one process per host, all its GPUs local):
  research train --config ... --workdir /shared/run --coordinator host0:1234 --num-processes N --process-id i
  # the same from the environment: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID
  # SLURM / Open MPI / TPU pods: `--distributed` alone lets jax.distributed.initialize detect the cluster

`initialize` calls `jax.distributed.initialize` once, before any JAX computation; on CPU it first selects gloo
collectives (so two processes on one machine form one mesh) and, with `local_devices`, fakes that many CPU devices
per process. After it, `jax.devices()` lists every process's devices (process 0's first) and each process feeds
only its rows: `local_rows` says which rows of a global batch this process's devices hold, and `global_batch` assembles
the processes' local arrays into global ones (`jax.make_array_from_process_local_data`). Only process 0 writes
logs, metrics and progress (`is_main`); every process takes part in checkpoints (orbax writes cooperatively).

When a process dies, the coordination service stops hearing its heartbeats and terminates the others after
`heartbeat_timeout_seconds` with "Terminating process because the JAX distributed service detected fatal
errors ... another task died" (exit status 134); restarting every process resumes from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import traceback
from typing import Any

import jax
import numpy as np

ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}


@dataclasses.dataclass(frozen=True)
class Cluster:
  """Where this process stands; `auto`: let JAX detect SLURM / Open MPI / TPU pod settings."""

  coordinator: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  auto: bool = False
  local_devices: int | None = None  # CPU only: fake this many devices in this process
  heartbeat_timeout_seconds: int = 100
  shutdown_timeout_seconds: int = 300

  def __post_init__(self):
    given = [self.coordinator is not None, self.num_processes is not None, self.process_id is not None]
    if any(given) and not all(given):
      raise ValueError(
        f"a multi-process run needs the coordinator address, the process count and this process's id "
        f"together (flags --coordinator/--num-processes/--process-id or ${ENV['coordinator']}, "
        f"${ENV['num_processes']}, ${ENV['process_id']}); got coordinator={self.coordinator!r}, "
        f"num_processes={self.num_processes!r}, process_id={self.process_id!r}"
      )
    if self.num_processes is not None:
      if self.num_processes < 1:
        raise ValueError(f"--num-processes {self.num_processes}; expected >= 1")
      if not 0 <= self.process_id < self.num_processes:
        raise ValueError(f"--process-id {self.process_id}; expected 0 .. {self.num_processes - 1}")
      host, _, port = self.coordinator.rpartition(":")
      if not host or not port.isdigit():
        raise ValueError(f"--coordinator {self.coordinator!r}; expected HOST:PORT, e.g. 10.0.0.1:1234")
    if self.local_devices is not None and self.local_devices < 1:
      raise ValueError(f"--local-devices {self.local_devices}; expected >= 1")
    for key in ("heartbeat_timeout_seconds", "shutdown_timeout_seconds"):
      if getattr(self, key) < 1:
        raise ValueError(f"{key}={getattr(self, key)}; expected >= 1")

  @property
  def enabled(self) -> bool:
    return self.auto or self.num_processes is not None


def _int(value: str | None, name: str) -> int | None:
  if value is None or value == "":
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name}={value!r}; expected an integer") from None


def from_args(
  coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None, **kwargs: Any
) -> Cluster:
  """Flags first, then the environment variables in ENV."""
  env = os.environ
  return Cluster(
    coordinator=coordinator or env.get(ENV["coordinator"]) or None,
    num_processes=num_processes
    if num_processes is not None
    else _int(env.get(ENV["num_processes"]), ENV["num_processes"]),
    process_id=process_id if process_id is not None else _int(env.get(ENV["process_id"]), ENV["process_id"]),
    **kwargs,
  )


def initialize(cluster: Cluster) -> None:
  """Join the distributed runtime (a no-op for a single-process Cluster, or when already initialized)."""
  if cluster.local_devices is not None:
    jax.config.update("jax_num_cpu_devices", cluster.local_devices)
  if not cluster.enabled:
    return
  if jax.distributed.is_initialized():
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # used only by CPU devices
  kwargs = (
    {}
    if cluster.auto and cluster.num_processes is None
    else dict(
      coordinator_address=cluster.coordinator, num_processes=cluster.num_processes, process_id=cluster.process_id
    )
  )
  jax.distributed.initialize(
    **kwargs,
    heartbeat_timeout_seconds=cluster.heartbeat_timeout_seconds,
    shutdown_timeout_seconds=cluster.shutdown_timeout_seconds,
  )


def is_main() -> bool:
  return jax.process_index() == 0


def local_rows(sharding: jax.sharding.Sharding, global_rows: int) -> slice:
  """The rows of a global batch (split on its leading axis by `sharding`) that this process's devices hold:
  everything in a single-process run; with the mesh's devices in process order, one consecutive block."""
  if jax.process_count() == 1:
    return slice(0, global_rows)
  blocks = {
    idx[0].indices(global_rows)[:2] for idx in sharding.addressable_devices_indices_map((global_rows,)).values()
  }
  start, stop = min(b[0] for b in blocks), max(b[1] for b in blocks)
  if sum(b - a for a, b in blocks) != stop - start and len(blocks) > 1:
    raise ValueError(
      f"this process's devices hold rows {sorted(blocks)} of a batch of {global_rows}, not one "
      "consecutive block; build the mesh from jax.devices() in their order"
    )
  return slice(start, stop)


def global_batch(local: dict[str, np.ndarray], sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
  """Global arrays from every process's local rows (a plain device_put in a single-process run)."""
  if jax.process_count() == 1:
    return jax.device_put(local, sharding)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)


@contextlib.contextmanager
def fail_fast(expected: tuple[type[BaseException], ...] = (ValueError,)):
  """In a multi-process run, an error in this process ends it at once (`os._exit`) after printing it: the others
  are then stopped by the coordination service within the heartbeat timeout ("another task died"). A normal exit
  would instead wait at JAX's shutdown barrier for peers that are blocked in a collective this process left.
  `expected` errors print as one line, others with their traceback. Single-process runs re-raise unchanged."""
  try:
    yield
  except BaseException as e:
    if jax.process_count() == 1:
      raise
    if isinstance(e, expected):
      print(f"error (process {jax.process_index()}): {e}", file=sys.stderr)
    else:
      traceback.print_exc()
      print(
        f"error (process {jax.process_index()} of {jax.process_count()}): {type(e).__name__} (above); when "
        "another process died or lost its connection, restart every process: the run resumes from its last "
        "checkpoint",
        file=sys.stderr,
      )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2 if isinstance(e, expected) else 1)
