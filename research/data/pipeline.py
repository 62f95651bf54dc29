"""Batches for training and exact evaluation, for every task kind (see research/data/tasks/base.py).

Training data is a grain MapDataset: shuffle (reseeded every epoch) -> repeat -> [random_map: the task's
per-example transform, e.g. MLM masking, with a fresh rng per example and epoch] -> batch. Batch t is
`dataset[t]`, so the data position follows from the step alone; the iterator state is also checkpointed.
Evaluation walks the whole split in order; the last partial batch is padded with weight-0 rows, never dropped.

A model batch holds `tokens`, `segment_ids`, `positions` (and `tokens_b`, `segment_ids_b`, `positions_b`
for two-input kinds), `targets` and `weights` ([B], or [B, L] for the `tokens` kind).
"""

from __future__ import annotations

from collections.abc import Iterator

import grain
import numpy as np

from research.data import tasks
from research.data.tasks.base import Task, num_examples


def build_task(name: str, data_cfg: dict | None = None) -> Task:
  return tasks.build(name, data_cfg)


class Rows:
  """Random-access source over a split's arrays (grain.MapDataset.source accepts any sequence)."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    self.arrays = arrays
    self.n = num_examples(arrays)

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    row = {k: v[i] for k, v in self.arrays.items()}
    row.setdefault("weights", np.float32(1.0))
    return row


def _inputs(rows: dict[str, np.ndarray], suffix: str) -> dict[str, np.ndarray]:
  tokens = np.asarray(rows["tokens" + suffix], np.int32)
  if "segment_ids" + suffix in rows:  # packed rows
    seg = np.asarray(rows["segment_ids" + suffix], np.int32)
    pos = np.asarray(rows["positions" + suffix], np.int32)
  else:
    idx_BxL = np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)
    seg = (idx_BxL < np.asarray(rows["lengths" + suffix])[:, None]).astype(np.int32)
    pos = np.where(seg > 0, idx_BxL, 0).astype(np.int32)
  return {
    "tokens" + suffix: np.where(seg > 0, tokens, 0).astype(np.int32),
    "segment_ids" + suffix: seg,
    "positions" + suffix: pos,
  }


def model_batch(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Stacked rows -> the model batch (padding tokens zeroed, segment ids and positions filled in)."""
  out = _inputs(rows, "")
  if "tokens_b" in rows:
    out.update(_inputs(rows, "_b"))
  if "targets" in rows:
    t = np.asarray(rows["targets"])
    out["targets"] = t.astype(np.float32) if np.issubdtype(t.dtype, np.floating) else t.astype(np.int32)
  out["weights"] = np.asarray(rows["weights"], np.float32)
  return out


def train_dataset(task_or_split, batch_size: int, seed: int, rows: slice | None = None) -> grain.MapDataset:
  """Shuffled, repeated, batched training rows; accepts a Task (its train split and train_map) or split arrays.

  Element t is global batch t: rows t·batch_size … (t+1)·batch_size − 1 of one shuffled, repeated stream (each
  row's random transform seeded by its index in the stream). `rows`: only these rows of every global batch
  (a multi-process run's share, research/train/distributed.py); element t is then that part of batch t, and
  nothing outside it is read.
  """
  split, train_map = task_or_split, None
  if isinstance(task_or_split, Task):
    split, train_map = task_or_split.splits["train"], task_or_split.train_map
  ds = grain.MapDataset.source(Rows(split)).seed(seed).shuffle().repeat(None)
  if train_map is not None:
    ds = ds.random_map(train_map)
  start, stop, _ = (rows or slice(0, batch_size)).indices(batch_size)
  local = stop - start
  if local < 1 or batch_size % local or start % local:
    raise ValueError(f"rows {start}:{stop} of a batch of {batch_size}: expected an equal, aligned share")
  ds = ds.batch(local, drop_remainder=True)
  if local < batch_size:
    ds = ds[start // local :: batch_size // local]
  return ds.map(model_batch)


def eval_batches(split: dict[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """The whole split in order; the last batch is filled with copies of its last row at weight 0."""
  rows = Rows(split)
  n = len(rows)
  for start in range(0, n, batch_size):
    items = [rows[i] for i in range(start, min(start + batch_size, n))]
    pad = dict(items[-1], weights=np.zeros_like(items[-1]["weights"]))
    items += [pad] * (batch_size - len(items))
    yield model_batch({k: np.stack([it[k] for it in items]) for k in items[0]})
