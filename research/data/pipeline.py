"""Batches for training and exact evaluation.

Training data is a grain MapDataset: shuffle (reseeded every epoch) -> repeat -> batch. Batch t is
`dataset[t]`, so the data position follows from the step alone; the iterator state is also checkpointed.
Evaluation walks the whole split in order; the last partial batch is padded with weight-0 rows, never dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import grain
import numpy as np

from research.data.tasks import listops


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  splits: dict  # name -> object with .tokens [N, L], .lengths [N], .labels [N]
  vocab_size: int
  num_classes: int
  seq_len: int
  majority_baseline: float


TASKS = ("listops",)


def task_vocab_size(name: str) -> int:
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
  return len(listops.VOCAB)


def build_task(name: str, data_cfg: dict) -> Task:
  task_vocab_size(name)
  cfg = listops.ListOpsConfig(**data_cfg)
  splits = listops.build_splits(cfg)
  _, majority = listops.majority_baseline(splits)
  return Task(name, splits, len(listops.VOCAB), listops.NUM_CLASSES, cfg.max_length + 1, majority)


class _Rows:
  """Random-access source over a split's arrays (grain.MapDataset.source accepts any sequence)."""

  def __init__(self, split):
    self.split = split

  def __len__(self) -> int:
    return len(self.split.labels)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    s = self.split
    return {"tokens": s.tokens[i], "lengths": s.lengths[i], "labels": s.labels[i], "weights": np.float32(1.0)}


def model_batch(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Stacked rows -> {tokens, segment_ids, positions, targets, weights} (one sequence per row)."""
  tokens = np.asarray(rows["tokens"], np.int32)
  idx_BxL = np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)
  valid_BxL = idx_BxL < rows["lengths"][:, None]
  return {
    "tokens": np.where(valid_BxL, tokens, 0).astype(np.int32),
    "segment_ids": valid_BxL.astype(np.int32),
    "positions": np.where(valid_BxL, idx_BxL, 0).astype(np.int32),
    "targets": np.asarray(rows["labels"], np.int32),
    "weights": np.asarray(rows["weights"], np.float32),
  }


def train_dataset(split, batch_size: int, seed: int) -> grain.MapDataset:
  return (
    grain.MapDataset.source(_Rows(split)).seed(seed).shuffle().repeat(None)
    .batch(batch_size, drop_remainder=True).map(model_batch)
  )


def eval_batches(split, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  rows = _Rows(split)
  n = len(rows)
  for start in range(0, n, batch_size):
    idx = list(range(start, min(start + batch_size, n)))
    items = [rows[i] for i in idx] + [dict(rows[idx[-1]], weights=np.float32(0.0))] * (batch_size - len(idx))
    yield model_batch({k: np.stack([it[k] for it in items]) for k in items[0]})
