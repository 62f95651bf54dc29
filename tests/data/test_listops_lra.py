"""ListOps at Long Range Arena length (research/data/tasks/listops.py): 500-2000 tokens, depth 10, 10 arguments."""

from __future__ import annotations

import time

import numpy as np
import pytest

from research.data import tasks
from research.data.tasks import listops

LRA = {"max_depth": 10, "max_args": 10, "min_length": 500, "max_length": 2000}
CFG = listops.ListOpsConfig(**LRA, num_train=120, num_val=20, num_test=20, seed=11)


@pytest.fixture(scope="module")
def built():
  start = time.perf_counter()
  splits = listops.build_splits(CFG)
  return splits, time.perf_counter() - start


def structure(tokens: list[str]) -> tuple[int, int]:
  """Maximum operator nesting depth and the largest argument count (a parser of its own)."""
  open_args: list[int] = []
  depth = widest = 0
  for token in tokens:
    if token == "]":
      widest = max(widest, open_args.pop())
      continue
    if open_args:
      open_args[-1] += 1
    if token.startswith("["):
      open_args.append(0)
      depth = max(depth, len(open_args))
  return depth, widest


def test_generation_is_fast(built):
  _, seconds = built
  assert seconds < 8.0, f"160 LRA-length expressions took {seconds:.1f} s"


def test_lengths_within_lra_range(built):
  splits, _ = built
  for name, n in (("train", 120), ("val", 20), ("test", 20)):
    split = splits[name]
    assert split.tokens.shape == (n, 2001) and split.tokens.dtype == np.int32
    assert (split.tokens[:, 0] == listops.CLS_ID).all()
    expression = split.lengths - 1  # lengths count the CLS
    assert expression.min() >= 500 and expression.max() <= 2000
    columns = np.arange(2001)[None, :]
    assert ((split.tokens != listops.PAD_ID) == (columns < split.lengths[:, None])).all()
  train = splits["train"].lengths - 1
  assert train.min() < 800 and train.max() > 1700  # lengths spread over the range, not clustered


def test_labels_equal_the_evaluator_and_structure_is_bounded(built):
  splits, _ = built
  deepest = 0
  for split in splits.values():
    for row, length, label in zip(split.tokens, split.lengths, split.labels, strict=True):
      tokens = listops.detokenize(row)
      assert len(tokens) == length - 1
      assert listops.evaluate(tokens) == label
      depth, widest = structure(tokens)
      assert depth <= 10 and 2 <= widest <= 10
      deepest = max(deepest, depth)
  assert deepest >= 5  # long expressions do nest


def test_registry_task_at_lra_length(built):
  splits, _ = built
  task = tasks.build("listops", {**LRA, "num_train": 120, "num_val": 20, "num_test": 20, "seed": 11})
  assert (task.kind, task.seq_len, task.num_classes) == ("classify", 2001, 10)
  np.testing.assert_array_equal(task.splits["test"]["targets"], splits["test"].labels)
  assert 500 < task.card["lengths"]["p50"] < 2001
