"""BigBird beyond the conformance suite: the block table (coverage, no duplicates, determinism per seed), the fast
path against a numpy oracle built from the table, the all-global limit, no LxL in the program, config errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.attention as attention
from research.attention.bigbird import block_pattern
from research.attention.masks import Segments
from tests.attention.helpers import init_apply, qkv
from tests.attention.test_local import assert_no_square, np_masked_attention, np_segment_mask, runner


@pytest.mark.parametrize("causal", [False, True])
def test_block_table_covers_global_window_and_random_blocks(causal):
  n, h, ng, w, r = 12, 3, 2, 3, 2
  idx, valid = block_pattern(n, h, num_global=ng, window_blocks=w, num_random=r, seed=7, causal=causal)
  assert idx.shape == valid.shape == (h, n - ng, ng + (2 if causal else 3) + r)
  for head in range(h):
    for m in range(n - ng):
      row, qb = idx[head, m][valid[head, m]].tolist(), ng + m
      assert len(row) == len(set(row))  # nothing counted twice
      window = set(range(max(qb - 1, 0), (qb if causal else min(qb + 1, n - 1)) + 1))
      assert set(range(ng)) | window == set(row[: len(set(range(ng)) | window)])  # globals, then the window
      rand = set(row) - set(range(ng)) - window
      eligible = set(range(qb if causal else n)) - set(range(ng)) - window
      assert rand <= eligible and len(rand) == min(r, len(eligible))
  # deterministic for a seed, different across seeds and heads
  again = block_pattern(n, h, num_global=ng, window_blocks=w, num_random=r, seed=7, causal=causal)
  np.testing.assert_array_equal(idx, again[0])
  other = block_pattern(n, h, num_global=ng, window_blocks=w, num_random=r, seed=8, causal=causal)[0]
  assert not np.array_equal(idx, other)
  assert not np.array_equal(idx[0], idx[1])


@pytest.mark.parametrize("causal,ng", [(False, 1), (True, 1), (False, 0), (True, 0)])
def test_equals_numpy_oracle_from_the_table(causal, ng):
  cfg = {"block_size": 3, "num_global_blocks": ng, "num_random_blocks": 2, "seed": 3}
  length, c = 26, 3  # 9 blocks, the last one partial
  q, k, v = qkv(jax.random.key(0), 2, length)
  segments = Segments.from_lengths(jnp.array([26, 14]), length)
  out = init_apply("bigbird", q, k, v, segments, causal, cfg)
  n = -(-length // c)
  idx, valid = block_pattern(n, 2, num_global=ng, window_blocks=3, num_random=2, seed=3, causal=causal)
  blocks = np.zeros((2, n, n), bool)
  blocks[:, :ng] = True  # global query blocks see everything (num_global_blocks=0: none)
  for head in range(2):
    for m in range(n - ng):
      blocks[head, ng + m, idx[head, m][valid[head, m]]] = True
  tb = np.arange(length) // c
  mask = np_segment_mask(segments.segment_ids, causal) & blocks[:, tb][:, :, tb][None]
  np.testing.assert_allclose(out, np_masked_attention(q, k, v, mask), atol=2e-6, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(out)[1, 14:], 0.0)


def test_all_global_is_softmax_and_padding_content_does_not_leak():
  q, k, v = qkv(jax.random.key(1), 2, 10)
  segments = Segments.from_lengths(jnp.array([10, 6]), 10)
  cfg = {"block_size": 4, "num_global_blocks": 3}  # 3 blocks, all global: full attention
  ref = init_apply("softmax", q, k, v, segments, False)
  np.testing.assert_allclose(init_apply("bigbird", q, k, v, segments, False, cfg), ref, atol=2e-6, rtol=1e-5)
  garbage = [x.at[1, 6:].set(7.0) for x in (q, k, v)]
  run = runner("bigbird", (("block_size", 2), ("num_random_blocks", 2)))
  base, moved = (run(*x, segments) for x in ((q, k, v), garbage))
  np.testing.assert_array_equal(base, moved)


def test_no_square_array_in_the_program():
  assert_no_square("bigbird", {"block_size": 4})


def test_config_errors_name_the_bad_value():
  with pytest.raises(ValueError, match="block_size must be an int >= 1, got 0"):
    attention.build("bigbird", {"block_size": 0})
  with pytest.raises(ValueError, match="window_blocks must be an odd int >= 1 .*got 2"):
    attention.build("bigbird", {"window_blocks": 2})
  with pytest.raises(ValueError, match="num_random_blocks must be an int >= 0, got -1"):
    attention.build("bigbird", {"num_random_blocks": -1})
