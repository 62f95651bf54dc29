"""Orbax checkpoints of the train state; last-k plus best-by-metric; safe restore.

The data position needs no checkpoint item: batch t is `train_dataset(...)[t]` (random access), so the restored
step alone fixes it, whatever the process count or mesh of the restoring run. (Checkpoints written before this
also hold a `data` item, the grain iterator's state; restoring reads only `state` and ignores it.)"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp


class Checkpointer:
  def __init__(self, directory: Path, keep_last: int, best_metric: str, best_mode: str = "max"):
    if keep_last < 1:
      raise ValueError(f"train.keep_last must be >= 1, got {keep_last}")
    self.best_metric = best_metric
    sign = 1.0 if best_mode == "max" else -1.0
    policy = pp.AnyPreservationPolicy(
      [
        pp.LatestN(n=keep_last),
        pp.BestN(get_metric_fn=lambda m: sign * m[best_metric], n=1, keep_checkpoints_without_metrics=False),
      ]
    )
    self.manager = ocp.CheckpointManager(
      Path(directory).absolute(), options=ocp.CheckpointManagerOptions(create=True, preservation_policy=policy)
    )

  def save(self, step: int, state: Any, metrics: dict | None = None) -> None:
    """Every process calls this (orbax writes a sharded state cooperatively)."""
    self.manager.save(step, metrics=metrics, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, int] | None:
    """Newest restorable checkpoint (or `step`); a corrupted one is skipped with a warning. None if none.
    The arrays land with the shardings of `abstract_state` (any mesh)."""
    steps = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
    for s in steps:
      try:
        restored = self.manager.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
      except Exception as e:  # noqa: BLE001 - any failure to read a checkpoint means: try the previous one
        if step is not None:
          raise ValueError(f"checkpoint at step {s} in {self.manager.directory} cannot be restored: {e}") from e
        warnings.warn(
          f"checkpoint at step {s} in {self.manager.directory} is unreadable ({type(e).__name__}: "
          f"{str(e)[:200]}); falling back to the previous one",
          RuntimeWarning,
          stacklevel=2,
        )
        continue
      return restored["state"], s
    return None

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def abstract_like(state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, so restored arrays land where they belong."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
