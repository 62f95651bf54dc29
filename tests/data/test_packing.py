"""Greedy first-fit packing (research/data/packing.py)."""

from __future__ import annotations

import numpy as np
import pytest

from research.data import packing


def test_hand_example_first_fit():
  # seq_len 4: [1 2 3] -> row 0; [4..10] is cut into [4 5 6 7] (row 1) and [8 9 10] (row 0 has 1 free: row 2);
  # [11 12] fits no open row -> row 3; the empty sequence is dropped; [13] goes back to row 0 (first fit).
  seqs = [np.array([1, 2, 3]), np.arange(4, 11), np.array([11, 12]), np.array([], np.int32), np.array([13])]
  p = packing.pack(seqs, 4)
  np.testing.assert_array_equal(p.tokens, [[1, 2, 3, 13], [4, 5, 6, 7], [8, 9, 10, 0], [11, 12, 0, 0]])
  np.testing.assert_array_equal(p.segment_ids, [[1, 1, 1, 2], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
  np.testing.assert_array_equal(p.positions, [[0, 1, 2, 0], [0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 0, 0]])
  np.testing.assert_array_equal(p.chunks, [[0, 0, 0, 1], [1, 0, 1, 1], [1, 4, 2, 1], [2, 0, 3, 1], [4, 0, 0, 2]])
  assert p.padding_before == pytest.approx(1 - 13 / (5 * 4))  # 5 chunks, each alone in a row of 4
  assert p.padding_after == pytest.approx(1 - 13 / (4 * 4))
  assert p.num_rows == 4
  assert {a.dtype for a in (p.tokens, p.segment_ids, p.positions)} == {np.dtype(np.int32)}


def test_first_fit_is_not_next_fit():
  # next fit would open a third row for [5]; first fit returns to row 0, which still has room
  p = packing.pack([np.array([1, 1]), np.array([2, 2, 2]), np.array([3])], 3)
  np.testing.assert_array_equal(p.tokens, [[1, 1, 3], [2, 2, 2]])
  np.testing.assert_array_equal(p.segment_ids, [[1, 1, 2], [1, 1, 1]])


def _random_sequences(seed: int, count: int, max_len: int) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  return [rng.integers(1, 1000, rng.integers(0, max_len + 1)).astype(np.int32) for _ in range(count)]


@pytest.mark.parametrize("seq_len, count", [(1, 20), (7, 100), (64, 400)])
def test_every_token_once_in_order(seq_len, count):
  seqs = _random_sequences(seq_len, count, 150)
  p = packing.pack(seqs, seq_len)
  total = sum(len(s) for s in seqs)
  assert int((p.segment_ids > 0).sum()) == total and not p.tokens[p.segment_ids == 0].any()
  # rebuild every sequence from its chunks' segments and compare
  rebuilt = [[] for _ in seqs]
  for sequence, start, row, segment in p.chunks.tolist():
    where = p.segment_ids[row] == segment
    cols = np.flatnonzero(where)
    assert len(cols) and (np.diff(cols) == 1).all()  # a segment is one contiguous run
    np.testing.assert_array_equal(p.positions[row, where], np.arange(len(cols)))  # positions restart at 0
    assert start == sum(len(x) for x in rebuilt[sequence])
    rebuilt[sequence].append(p.tokens[row, where])
  for seq, parts in zip(seqs, rebuilt, strict=True):
    np.testing.assert_array_equal(np.concatenate(parts) if parts else np.zeros(0, np.int32), seq)
  # segment ids are 1..k left to right in each row, padding only at the end
  for row in p.segment_ids:
    used = row[row > 0]
    assert (row[len(used) :] == 0).all()
    np.testing.assert_array_equal(np.unique(used), np.arange(1, used.max() + 1))
    assert (np.diff(used) >= 0).all()


def test_placement_is_first_fit():
  seqs, seq_len = _random_sequences(1, 500, 40), 32
  p = packing.pack(seqs, seq_len)
  fill = np.zeros(p.num_rows, np.int64)
  for sequence, start, row, _ in p.chunks.tolist():  # replay the placements in order
    n = min(seq_len, len(seqs[sequence]) - start)
    assert (fill[:row] + n > seq_len).all() and fill[row] + n <= seq_len  # no earlier row had room
    assert row <= int(np.count_nonzero(fill)), "a new row opened while an earlier one was never used"
    fill[row] += n
  np.testing.assert_array_equal(fill, (p.segment_ids > 0).sum(1))
  chunks = len(p.chunks)
  total = sum(len(s) for s in seqs)
  assert p.padding_before == pytest.approx(1 - total / (chunks * seq_len))
  assert p.padding_after == pytest.approx(1 - total / (p.num_rows * seq_len))
  assert p.padding_after < p.padding_before


def test_deterministic_and_edge_cases():
  seqs = _random_sequences(3, 200, 90)
  a, b = packing.pack(seqs, 50), packing.pack([s.tolist() for s in seqs], 50)
  for x, y in ((a.tokens, b.tokens), (a.segment_ids, b.segment_ids), (a.positions, b.positions), (a.chunks, b.chunks)):
    np.testing.assert_array_equal(x, y)
  empty = packing.pack([np.array([], np.int32)], 8)
  assert empty.tokens.shape == (0, 8) and empty.padding_before == empty.padding_after == 0.0
  exact = packing.pack([np.arange(1, 17)], 8)  # a long sequence fills whole rows: no padding either way
  np.testing.assert_array_equal(exact.tokens, np.arange(1, 17).reshape(2, 8))
  assert exact.padding_before == exact.padding_after == 0.0


@pytest.mark.parametrize("seq_len", [0, -3, 2.5, True, "8"])
def test_bad_seq_len(seq_len):
  with pytest.raises(ValueError, match="seq_len="):
    packing.pack([np.array([1, 2])], seq_len)


def test_bad_sequence_shape():
  with pytest.raises(ValueError, match=r"sequence 1 has shape \(2, 2\)"):
    packing.pack([np.array([1]), np.ones((2, 2), np.int32)], 4)
