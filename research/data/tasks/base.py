"""The one contract between task modules and the training pipeline.

A task module (``research/data/tasks/<name>.py``) defines a frozen ``Config`` dataclass (validated in
``__post_init__``: a bad value raises one ``ValueError`` naming the field, the value and what was expected)
and ``build(cfg) -> Task``. A split is a dict of numpy arrays sharing the leading dimension N:

* every kind: ``tokens`` int [N, L] (0 = padding) and either ``lengths`` int [N] (one sequence per row,
  starting at position 0) or ``segment_ids`` + ``positions`` int [N, L] (packed rows, segment 0 = padding);
* ``classify``: ``targets`` int [N] in [0, num_classes);
* ``regress``:  ``targets`` float32 [N];
* ``pair``:     a second input ``tokens_b`` [N, L] + ``lengths_b`` [N], ``targets`` int [N] (class of the pair);
* ``match``:    a second input ``tokens_b`` + ``lengths_b``; row i of "a" matches row i of "b" (in-batch negatives);
* ``tokens``:   ``targets`` int [N, L] (vocabulary ids) and ``weights`` float32 [N, L] (1 where a loss is taken).

Classification heads pool position 0, so ``classify``/``pair`` inputs start with a CLS token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

KINDS = ("classify", "regress", "pair", "match", "tokens")
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  kind: str
  splits: dict[str, dict[str, np.ndarray]]
  vocab_size: int
  seq_len: int
  num_classes: int  # classify/pair: classes; tokens: vocab_size; regress: 1; match: 0
  baseline: float  # the primary metric of a trivial predictor on test (majority class, chance, mean rating)
  card: dict = dataclasses.field(default_factory=dict)  # dataset-card facts (source, sizes, classes, lengths)
  train_map: Callable[[dict, np.random.Generator], dict] | None = None  # per-example random transform (train)
  tokenizer: Any = None  # text tasks: the tokenizer rows were encoded with (research.embed reads it)

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"task {self.name!r} has kind {self.kind!r}; expected one of {', '.join(KINDS)}")
    missing = [s for s in SPLITS if s not in self.splits]
    if missing:
      raise ValueError(f"task {self.name!r} lacks splits {missing}")
    for split, arrays in self.splits.items():
      check_split(self, split, arrays)

  @property
  def majority_baseline(self) -> float:
    return self.baseline


def check_split(task: Task, split: str, arrays: dict[str, np.ndarray]) -> None:
  """Shapes and required keys of one split (a task bug, not user input, if this fails)."""
  required = {"tokens"}
  required |= {"targets"} if task.kind != "match" else set()
  required |= {"tokens_b", "lengths_b"} if task.kind in ("pair", "match") else set()
  required |= {"weights"} if task.kind == "tokens" else set()
  if not ({"lengths"} <= arrays.keys() or {"segment_ids", "positions"} <= arrays.keys()):
    required |= {"lengths"}
  missing = sorted(required - arrays.keys())
  if missing:
    raise ValueError(f"task {task.name!r} split {split!r} lacks arrays {missing} (kind {task.kind!r})")
  n, length = arrays["tokens"].shape
  if length != task.seq_len:
    raise ValueError(f"task {task.name!r} split {split!r}: tokens have length {length}, seq_len is {task.seq_len}")
  for key, a in arrays.items():
    if a.shape[0] != n:
      raise ValueError(f"task {task.name!r} split {split!r}: {key} has {a.shape[0]} rows, tokens {n}")


def num_examples(arrays: dict[str, np.ndarray]) -> int:
  return int(arrays["tokens"].shape[0])


def length_stats(lengths: np.ndarray) -> dict[str, float]:
  """Length distribution for dataset cards."""
  lengths = np.asarray(lengths)
  return {
    "min": int(lengths.min()),
    "p50": float(np.percentile(lengths, 50)),
    "p90": float(np.percentile(lengths, 90)),
    "max": int(lengths.max()),
    "mean": float(lengths.mean()),
  }


def majority(targets: np.ndarray) -> float:
  """Accuracy of always predicting the most frequent class."""
  return float(np.bincount(np.asarray(targets, np.int64)).max() / len(targets))
