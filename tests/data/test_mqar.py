"""Multi-query associative recall (research/data/tasks/mqar.py): answers recallable from the kv section."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from research.data import tasks
from research.data.tasks import mqar
from tests.data.helpers import assert_same_splits

CFG = mqar.Config(num_train=400, num_val=50, num_test=60, seed=2)
SIZES = {"train": 400, "val": 50, "test": 60}


@pytest.fixture(scope="module")
def task():
  return mqar.build(CFG)


def test_shapes_and_dtypes(task):
  assert (task.name, task.kind, task.vocab_size, task.seq_len, task.num_classes) == ("mqar", "tokens", 256, 128, 256)
  for name, split in task.splits.items():
    n = SIZES[name]
    assert split["tokens"].shape == split["targets"].shape == split["weights"].shape == (n, 128)
    assert split["tokens"].dtype == split["targets"].dtype == np.int32 and split["weights"].dtype == np.float32
    assert split["lengths"].dtype == np.int32 and (split["lengths"] == 128).all()
    assert split["tokens"].min() >= 5 and split["tokens"].max() <= 255  # no specials, no padding
    assert all(not a.flags.writeable for a in split.values())


def test_kv_section_keys_and_values(task):
  num_keys = (256 - 5) // 2  # 125 keys: ids 5..129; values 130..255
  for split in task.splits.values():
    keys, values = split["tokens"][:, 0:32:2], split["tokens"][:, 1:32:2]
    assert keys.min() >= 5 and keys.max() < 5 + num_keys
    assert values.min() >= 5 + num_keys and values.max() <= 255
    for row_keys, row_values in zip(keys, values, strict=True):
      assert len(set(row_keys.tolist())) == 16 and len(set(row_values.tolist())) == 16


def test_weights_only_on_queries_and_every_answer_is_in_context(task):
  for split in task.splits.values():
    tokens, targets, weights = split["tokens"], split["targets"], split["weights"]
    assert set(np.unique(weights)) == {0.0, 1.0}
    np.testing.assert_array_equal(weights > 0, targets > 0)
    assert (weights.sum(1) == 16).all()
    rows, cols = np.nonzero(weights)
    assert cols.min() >= 32 and (cols % 2 == 0).all()  # queries sit in even slots after the kv section
    for r, t in zip(rows, cols, strict=True):
      key = tokens[r, t]
      (j,) = np.nonzero(tokens[r, 0:32:2] == key)[0] * 2  # the key occurs exactly once in the kv section
      assert tokens[r, j + 1] == targets[r, t]  # ... with the answer right after it
    queried = tokens[rows, cols].reshape(-1, 16)
    assert all(len(set(q.tolist())) == 16 for q in queried)  # every pair queried once


def test_fewer_queries_and_uniform_placement():
  cfg = mqar.Config(
    num_kv=8, num_queries=3, seq_len=64, vocab_size=64, placement="uniform", num_train=50, num_val=5, num_test=5
  )
  t = mqar.build(cfg)
  split = t.splits["train"]
  assert (split["weights"].sum(1) == 3).all()
  rows, cols = np.nonzero(split["weights"])
  for r, c in zip(rows, cols, strict=True):
    (j,) = np.nonzero(split["tokens"][r, 0:16:2] == split["tokens"][r, c])[0] * 2
    assert split["tokens"][r, j + 1] == split["targets"][r, c]


def test_num_queries_zero_queries_every_pair():
  t = mqar.build(mqar.Config(num_kv=8, num_train=20, num_val=2, num_test=2))
  assert (t.splits["train"]["weights"].sum(1) == 8).all() and t.card["queries_per_sequence"] == 8


def slot_frequencies(placement: str) -> tuple[np.ndarray, np.ndarray]:
  """Empirical distribution of the query slot with one query per sequence, and the slot count."""
  cfg = mqar.Config(num_queries=1, placement=placement, num_train=2000, num_val=1, num_test=1, seed=9)
  cols = np.nonzero(mqar.build(cfg).splits["train"]["weights"])[1]
  space = (128 - 32) // 2
  return np.bincount((cols - 32) // 2, minlength=space) / len(cols), space


def test_power_law_placement_matches_zoology_formula():
  freq, space = slot_frequencies("power")
  p = 0.01 * np.arange(1, space + 1) ** (0.01 - 1)  # zoology: p = a * i ** (a - 1), normalised
  p /= p.sum()
  tolerance = 5 * np.sqrt(p * (1 - p) / 2000)
  assert (np.abs(freq - p) < tolerance + 1e-3).all()
  uniform, _ = slot_frequencies("uniform")
  assert np.abs(uniform - 1 / space).max() < 5 * np.sqrt(1 / space / 2000)


def test_deterministic_by_seed(task):
  again = mqar.build.__wrapped__(dataclasses.replace(CFG))
  assert_same_splits(task, again)
  other = mqar.build(dataclasses.replace(CFG, seed=3))
  assert not np.array_equal(other.splits["train"]["tokens"], task.splits["train"]["tokens"])


def test_splits_disjoint_and_prefix_stable(task):
  rows = {name: {r.tobytes() for r in split["tokens"]} for name, split in task.splits.items()}
  assert all(len(rows[name]) == SIZES[name] for name in rows)
  assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"] and not rows["val"] & rows["test"]
  smaller = mqar.build(dataclasses.replace(CFG, num_train=100))  # the stream does not depend on split sizes
  np.testing.assert_array_equal(smaller.splits["train"]["tokens"], task.splits["train"]["tokens"][:100])
  np.testing.assert_array_equal(smaller.splits["test"]["tokens"], task.splits["test"]["tokens"])


def test_baseline_is_most_frequent_train_value(task):
  train, test = task.splits["train"], task.splits["test"]
  counts = np.bincount(train["targets"][train["weights"] > 0])
  answers = test["targets"][test["weights"] > 0]
  assert task.baseline == pytest.approx(np.mean(answers == counts.argmax()))
  assert task.baseline < 0.05
  assert task.card["sizes"] == SIZES and task.card["vocabulary"]["keys"] == [5, 129]


def test_registry_builds_the_same_task(task):
  via = tasks.build("mqar", {"num_train": 400, "num_val": 50, "num_test": 60, "seed": 2})
  np.testing.assert_array_equal(via.splits["val"]["targets"], task.splits["val"]["targets"])


@pytest.mark.parametrize(
  ("kwargs", "match"),
  [
    ({"num_queries": 17}, r"Config.num_queries=17; expected <= num_kv=16"),
    ({"seq_len": 60}, r"Config.seq_len=60; expected >= 2 \* num_kv \+ 2 \* \(num_queries or num_kv\) = 64"),
    ({"seq_len": 39, "num_queries": 4}, r"Config.seq_len=39; expected >= .* = 40"),
    ({"vocab_size": 30}, r"Config.vocab_size=30; expected >= 38"),
    ({"placement": "middle"}, r"Config.placement='middle'; expected one of power, uniform"),
    ({"power_a": 0.0}, r"Config.power_a=0.0; expected a float in \(0, 1000\)"),
    ({"num_kv": 0}, r"Config.num_kv=0; expected an integer >= 1"),
    ({"num_queries": -1}, r"Config.num_queries=-1; expected an integer >= 0"),
    ({"num_train": 2.5}, r"Config.num_train=2.5; expected an integer"),
  ],
)
def test_config_errors_name_the_field(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mqar.Config(**kwargs)
