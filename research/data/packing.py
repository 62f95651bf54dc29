"""Greedy first-fit packing of variable-length sequences into fixed-length rows with segment ids.

Several short sequences share one row of ``seq_len`` tokens; ``segment_ids`` (1..k within a row, 0 for
padding) keep attention inside a sequence and ``positions`` restart at 0 for every segment (the layout
T5/``seqio`` packing and the encoder's segment masking use).

Exact conventions of :func:`pack`:

* A sequence longer than ``seq_len`` is first cut into consecutive chunks of ``seq_len`` tokens (the last
  one shorter); every chunk is then packed as a sequence of its own, with positions starting at 0.
  Empty sequences are dropped.
* Chunks are placed in input order (sequence 0's chunks first), each into the lowest-index row that still
  has room for all of it, else into a new row at the end (first fit; Johnson 1973, "Near-optimal bin
  packing algorithms"). A chunk is never split across rows. Within a row, segments get ids 1, 2, ... in
  the order they were placed and sit left to right; padding (token 0, segment 0, position 0) fills the
  right end of the row.
* ``padding_before`` = 1 - tokens / (chunks * seq_len): the pad fraction when every chunk has a row of its
  own (unpacked, one sequence per row); ``padding_after`` = 1 - tokens / (rows * seq_len). Both are 0.0
  when there are no tokens.

Deterministic: the result depends only on the inputs. A max segment tree over row free space finds the
first fitting row in O(log n) per chunk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

CHUNK_COLUMNS = ("sequence", "start", "row", "segment")


@dataclasses.dataclass(frozen=True)
class Packed:
  tokens: np.ndarray  # int32 [R, seq_len], 0 = padding
  segment_ids: np.ndarray  # int32 [R, seq_len], 1..k per row, 0 = padding
  positions: np.ndarray  # int32 [R, seq_len], 0.. within each segment, 0 on padding
  chunks: np.ndarray  # int64 [C, 4]: per chunk (sequence index, start within the sequence, row, segment id)
  padding_before: float
  padding_after: float

  @property
  def num_rows(self) -> int:
    return int(self.tokens.shape[0])


def chunk(sequences: Sequence[np.ndarray], seq_len: int) -> list[tuple[int, int, np.ndarray]]:
  """(sequence index, start, tokens) of every chunk of at most seq_len tokens, in order; empty ones dropped."""
  out = []
  for i, seq in enumerate(sequences):
    seq = np.asarray(seq)
    if seq.ndim != 1:
      raise ValueError(f"sequence {i} has shape {seq.shape}; expected a 1-D array of token ids")
    out.extend((i, start, seq[start : start + seq_len]) for start in range(0, len(seq), seq_len))
  return out


def first_fit(lengths: Sequence[int], capacity: int) -> tuple[np.ndarray, np.ndarray]:
  """Row of each item under first fit, and the row's fill before the item went in (its column offset)."""
  size = 1
  while size < max(len(lengths), 1):
    size *= 2
  tree = [capacity] * (2 * size)  # tree[size + r]: free space of row r; inner nodes: max of their children
  rows = np.zeros(len(lengths), np.int64)
  offsets = np.zeros(len(lengths), np.int64)
  for j, n in enumerate(lengths):
    node = 1
    while node < size:  # descend to the leftmost leaf with free space >= n (untouched rows have `capacity`)
      node = 2 * node if tree[2 * node] >= n else 2 * node + 1
    rows[j], offsets[j] = node - size, capacity - tree[node]
    tree[node] -= n
    node //= 2
    while node:
      tree[node] = max(tree[2 * node], tree[2 * node + 1])
      node //= 2
  return rows, offsets


def pack(sequences: Sequence[np.ndarray], seq_len: int) -> Packed:
  """Pack 1-D integer sequences into [R, seq_len] rows (see the module docstring for the exact rules)."""
  if isinstance(seq_len, bool) or not isinstance(seq_len, int | np.integer) or seq_len < 1:
    raise ValueError(f"seq_len={seq_len!r}; expected a positive integer")
  seq_len = int(seq_len)
  pieces = chunk(sequences, seq_len)
  lengths = np.array([len(p) for _, _, p in pieces], np.int64)
  rows, offsets = first_fit(lengths.tolist(), seq_len)
  num_rows = int(rows.max()) + 1 if len(rows) else 0
  segments = np.zeros(len(pieces), np.int64)
  seen = np.zeros(num_rows, np.int64)
  for j, r in enumerate(rows.tolist()):  # segment ids count up in placement order within each row
    seen[r] += 1
    segments[j] = seen[r]

  total = int(lengths.sum())
  flat = np.concatenate([p for _, _, p in pieces]).astype(np.int32) if pieces else np.zeros(0, np.int32)
  within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  token_rows = np.repeat(rows, lengths)
  token_cols = np.repeat(offsets, lengths) + within
  tokens = np.zeros((num_rows, seq_len), np.int32)
  segment_ids = np.zeros((num_rows, seq_len), np.int32)
  positions = np.zeros((num_rows, seq_len), np.int32)
  tokens[token_rows, token_cols] = flat
  segment_ids[token_rows, token_cols] = np.repeat(segments, lengths)
  positions[token_rows, token_cols] = within

  chunks = np.array(
    [(i, start, r, s) for (i, start, _), r, s in zip(pieces, rows, segments, strict=True)], np.int64
  ).reshape(-1, len(CHUNK_COLUMNS))
  before = 1.0 - total / (len(pieces) * seq_len) if total else 0.0
  after = 1.0 - total / (num_rows * seq_len) if total else 0.0
  return Packed(tokens, segment_ids, positions, chunks, before, after)
