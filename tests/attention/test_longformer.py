"""Longformer beyond the conformance suite: the window ∪ global pattern built in numpy, global tokens see (and
are seen by) their whole sequence, no LxL in the program, config errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.attention as attention
from research.attention.masks import Segments
from tests.attention.helpers import init_apply, packed_segments, qkv
from tests.attention.test_local import assert_no_square, np_masked_attention, np_segment_mask


def _np_pattern(segments: Segments, window, global_positions, causal):
  ids, pos = np.asarray(segments.segment_ids), np.asarray(segments.positions)
  length = ids.shape[1]
  i, j = np.arange(length)[:, None], np.arange(length)[None, :]
  band = (i - j >= 0) & (i - j <= window) if causal else np.abs(i - j) <= window
  is_global = np.isin(pos, global_positions) & (ids > 0)
  pattern = band[None] | is_global[:, :, None] | is_global[:, None, :]
  return np_segment_mask(ids, causal) & pattern[:, None], is_global


@pytest.mark.parametrize("window,global_positions,causal", [(2, (0,), False), (1, (0, 3), True)])
def test_equals_numpy_pattern_with_packing(window, global_positions, causal):
  q, k, v = qkv(jax.random.key(0), 1, 26)
  segments = packed_segments([11, 1, 9], 26)  # each packed sequence has its own global tokens
  overrides = {"window": window, "global_positions": global_positions}
  out = init_apply("longformer", q, k, v, segments, causal, overrides)
  mask, is_global = _np_pattern(segments, window, global_positions, causal)
  assert is_global.sum() == sum(sum(p < n for p in global_positions) for n in (11, 1, 9))
  np.testing.assert_allclose(out, np_masked_attention(q, k, v, mask), atol=2e-6, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(out)[0, 21:], 0.0)


def test_global_tokens_see_and_are_seen_by_everything():
  q, k, v = qkv(jax.random.key(1), 2, 30)
  segments = Segments.from_lengths(jnp.array([30, 17]), 30)
  overrides = {"window": 2}
  out = init_apply("longformer", q, k, v, segments, False, overrides)
  full = init_apply("softmax", q, k, v, segments, False)
  np.testing.assert_allclose(out[:, 0], full[:, 0], atol=2e-6, rtol=1e-5)  # [CLS] attends its whole sequence
  weights = init_apply("longformer", q, k, v, segments, False, overrides, method="implied_weights")
  w = np.asarray(weights)
  assert np.all(w[0, :, :, 0] > 0) and np.all(w[1, :, :17, 0] > 0)  # everyone attends [CLS] ...
  assert np.all(w[1, :, :, 17:] == 0)  # ... but never padding
  assert np.all((w[0, :, 10, 1:] > 0) == (np.abs(10 - np.arange(1, 30)) <= 2))  # others: the window only


def test_no_square_array_in_the_program():
  assert_no_square("longformer", {"window": 4})


def test_config_errors_name_the_bad_value():
  with pytest.raises(ValueError, match="window must be an int >= 1, got -1"):
    attention.build("longformer", {"window": -1})
  with pytest.raises(ValueError, match=r"global_positions must be .*got \(0, 0\)"):
    attention.build("longformer", {"global_positions": (0, 0)})
  with pytest.raises(ValueError, match=r"global_positions must be .*got \(\)"):
    attention.build("longformer", {"global_positions": ()})
  assert attention.build("longformer", {"global_positions": [0, 5]}).cfg.global_positions == (0, 5)
