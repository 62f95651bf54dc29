"""Shared checks for task tests."""

import numpy as np


def assert_same_splits(a, b) -> None:
  """Two Tasks hold the same splits with the same arrays, bit for bit."""
  assert a.splits.keys() == b.splits.keys()
  for split in a.splits:
    assert a.splits[split].keys() == b.splits[split].keys()
    for key in a.splits[split]:
      np.testing.assert_array_equal(b.splits[split][key], a.splits[split][key])
