"""The grain training pipeline: deterministic per step, and its iterator state restores at the same example."""

import numpy as np

from research.data.pipeline import eval_batches, model_batch, train_dataset
from research.data.tasks import mlm
from research.data.tasks.base import Task


def _mlm_like_task() -> Task:
  rng = np.random.default_rng(0)
  n, length = 40, 16
  lengths = rng.integers(6, 17, n)
  idx = np.arange(length)[None, :]
  split = {
    "tokens": rng.integers(5, 50, (n, length)).astype(np.int32),
    "segment_ids": (idx < lengths[:, None]).astype(np.int32),
    "positions": np.where(idx < lengths[:, None], idx, 0).astype(np.int32),
  }
  split["targets"] = split["tokens"].copy()
  split["weights"] = np.zeros((n, length), np.float32)

  def train_map(row, rng):
    return mlm.mask_row(row, rng, rate=0.3, vocab_size=50)

  return Task("toy", "tokens", {"train": split, "val": split, "test": split}, 50, length, 50, 0.0, train_map=train_map)


def _equal(a: dict, b: dict) -> bool:
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_iterator_state_restores_the_same_next_batch_with_random_masking():
  task = _mlm_like_task()
  ds = train_dataset(task, 4, seed=3)
  it = iter(ds.to_iter_dataset())
  for _ in range(7):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(5)]
  fresh = iter(train_dataset(task, 4, seed=3).to_iter_dataset())
  fresh.set_state(state)
  assert all(_equal(e, next(fresh)) for e in expected)
  assert all(_equal(ds[7 + i], e) for i, e in enumerate(expected))  # batch t is dataset[t]


def test_masks_change_across_epochs_and_only_where_tokens_are_real():
  task = _mlm_like_task()
  ds = train_dataset(task, 40, seed=0)  # one batch = one epoch, all rows
  first, second = ds[0], ds[1]
  assert not np.array_equal(first["weights"], second["weights"])  # dynamic masking: a new rng per epoch
  for b in (first, second):
    assert np.all(b["weights"][b["segment_ids"] == 0] == 0)
    assert 0.2 < b["weights"].sum() / (b["segment_ids"] > 0).sum() < 0.4


def test_model_batch_derives_segments_from_lengths_and_keeps_packed_rows():
  rows = {
    "tokens": np.array([[7, 8, 9, 4]]),
    "lengths": np.array([2]),
    "targets": np.array([1]),
    "weights": np.array([1.0]),
  }
  b = model_batch(rows)
  assert b["tokens"].tolist() == [[7, 8, 0, 0]] and b["segment_ids"].tolist() == [[1, 1, 0, 0]]
  assert b["positions"].tolist() == [[0, 1, 0, 0]] and b["targets"].dtype == np.int32
  packed = {
    "tokens": np.array([[7, 8, 9, 0]]),
    "segment_ids": np.array([[1, 1, 2, 0]]),
    "positions": np.array([[0, 1, 0, 0]]),
    "targets": np.array([0.5], np.float32),
    "weights": np.array([1.0]),
  }
  b = model_batch(packed)
  assert b["segment_ids"].tolist() == [[1, 1, 2, 0]] and b["positions"].tolist() == [[0, 1, 0, 0]]
  assert b["targets"].dtype == np.float32


def test_eval_batches_pad_token_weights_with_zeros():
  task = _mlm_like_task()
  split = dict(task.splits["val"], weights=np.ones((40, 16), np.float32))
  batches = list(eval_batches(split, 16))
  assert len(batches) == 3 and batches[-1]["weights"][8:].sum() == 0 and batches[-1]["weights"][:8].sum() == 8 * 16
