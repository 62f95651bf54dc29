"""Reformer beyond the conformance suite: one bucket = full shared-QK attention without self; the buckets'
chunked pattern rebuilt in numpy from the hashes alone; self only when alone; rotations in their collection and
recomputed from the seed; k ignored; no LxL in the program; config errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.attention as attention
from research.attention.masks import Segments
from research.attention.reformer import draw_rotations, lsh_buckets
from tests.attention.helpers import init_apply, packed_segments, qkv
from tests.attention.test_local import assert_no_square, np_masked_attention, np_segment_mask, runner


def _shared_qk(q):
  q = np.asarray(q, np.float64)
  return q, q / np.linalg.norm(q, axis=-1, keepdims=True)


def _np_reformer(q, v, segments: Segments, buckets_BxHxRxL, chunk, causal):
  """fp64 oracle from the buckets alone: groups (segment, bucket), chunk rank = rank in group // chunk."""
  ids = np.asarray(segments.segment_ids)
  b, h, r, length = buckets_BxHxRxL.shape
  union = np.zeros((b, h, length, length), bool)
  for bi in range(b):
    for hi in range(h):
      for ri in range(r):
        crank, seen = np.zeros(length, int), {}
        for i in range(length):  # position order
          key = (ids[bi, i], buckets_BxHxRxL[bi, hi, ri, i])
          crank[i], seen[key] = seen.get(key, 0) // chunk, seen.get(key, 0) + 1
        for i in range(length):
          for j in range(length):
            same = ids[bi, i] > 0 and ids[bi, i] == ids[bi, j]
            same &= buckets_BxHxRxL[bi, hi, ri, i] == buckets_BxHxRxL[bi, hi, ri, j]
            union[bi, hi, i, j] |= same and crank[j] in (crank[i] - 1, crank[i])
  union &= ~np.eye(length, dtype=bool)
  if causal:
    union &= np.tril(np.ones((length, length), bool))
  qq, kn = _shared_qk(q)
  out = np_masked_attention(qq, kn, v, union & np_segment_mask(ids, causal))
  alone = ~union.any(-1) & (ids > 0)[:, None, :]  # BxHxL: nothing else -> itself
  out = np.where(np.moveaxis(alone, 1, 2)[..., None], np.asarray(v, np.float64), out)
  return out, union


@pytest.mark.parametrize("causal", [False, True])
def test_one_bucket_is_full_shared_qk_attention_without_self(causal):
  q, k, v = qkv(jax.random.key(0), 2, 12)
  segments = Segments.from_lengths(jnp.array([12, 5]), 12)
  out = init_apply("reformer", q, k, v, segments, causal, {"n_buckets": 1, "n_hashes": 1, "chunk_size": 12})
  qq, kn = _shared_qk(q)
  mask = np_segment_mask(segments.segment_ids, causal) & ~np.eye(12, dtype=bool)
  expect = np_masked_attention(qq, kn, v, mask)
  if causal:  # the first token has nothing else: itself
    expect[:, 0] = np.asarray(v)[:, 0]
  np.testing.assert_allclose(out, expect, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_pattern_is_exactly_the_chunks_of_its_buckets(causal):
  cfg = {"n_hashes": 3, "n_buckets": 4, "chunk_size": 2, "seed": 5}
  length = 21
  q, k, v = qkv(jax.random.key(1), 1, length)
  segments = packed_segments([9, 1, 8], length)
  run = runner("reformer", tuple(cfg.items()), causal)
  out = run(q, k, v, segments)
  weights = runner("reformer", tuple(cfg.items()), causal, "implied_weights")(q, k, v, segments)
  rot = draw_rotations(5, 2, 3, q.shape[-1], 4)
  buckets = np.asarray(jax.jit(lsh_buckets, static_argnums=2)(q, rot, 4))
  assert len(np.unique(buckets)) == 4  # the hash is not degenerate
  expect, union = _np_reformer(q, v, segments, buckets, 2, causal)
  np.testing.assert_allclose(out, expect, atol=2e-6, rtol=1e-5)
  alone = ~union.any(-1, keepdims=True) & (np.asarray(segments.segment_ids) > 0)[:, None, :, None]
  np.testing.assert_array_equal(np.asarray(weights) > 0, union | (alone & np.eye(length, dtype=bool)))
  others = np_segment_mask(segments.segment_ids, causal) & ~np.eye(length, dtype=bool)
  assert union.sum() < np.broadcast_to(others, union.shape).sum()  # a real restriction of shared-QK attention
  if causal:  # a future token changing bucket (which reshuffles the slot layout) leaves the past bitwise unchanged
    for t, src in ((4, 13), (15, 0)):
      moved = q.at[:, t].set(-q[:, src])
      new_buckets = np.asarray(jax.jit(lsh_buckets, static_argnums=2)(moved, rot, 4))
      assert np.any(new_buckets[..., t] != buckets[..., t])
      np.testing.assert_array_equal(np.asarray(run(moved, k, v, segments))[:, :t], np.asarray(out)[:, :t])


def test_length_one_sequence_attends_itself_and_k_is_ignored():
  q, k, v = qkv(jax.random.key(2), 1, 6)
  segments = packed_segments([5, 1], 6)
  run = runner("reformer")
  out = run(q, k, v, segments)
  np.testing.assert_array_equal(out[0, 5], v[0, 5])
  np.testing.assert_array_equal(run(q, k * 3.0 + 1.0, v, segments), out)


def test_rotations_live_in_their_collection_and_default_to_the_seed():
  q, k, v = qkv(jax.random.key(3), 1, 16)
  segments = Segments.from_lengths(jnp.array([16]), 16)
  mixer = attention.build("reformer", {"seed": 4})
  variables = jax.jit(mixer.init, static_argnums=5)(jax.random.key(0), q, k, v, segments, False)
  assert set(variables) == {"lsh"} and "params" not in variables  # not trainable
  rot = variables["lsh"]["hash"]["rotations"]
  np.testing.assert_array_equal(rot, draw_rotations(4, 2, 2, 8, 8))
  apply = jax.jit(lambda variables: mixer.apply(variables, q, k, v, segments, False))
  with_collection, without = apply(variables), apply({})
  np.testing.assert_allclose(with_collection, without, atol=1e-6, rtol=1e-6)  # (two programs: fp rounding only)
  redrawn = apply({"lsh": {"hash": {"rotations": draw_rotations(5, 2, 2, 8, 8)}}})
  assert not np.allclose(redrawn, with_collection)


def test_no_square_array_in_the_program():
  assert_no_square("reformer", {"chunk_size": 8})


def test_config_errors_name_the_bad_value():
  with pytest.raises(ValueError, match="n_buckets must be 1 or even .*got 3"):
    attention.build("reformer", {"n_buckets": 3})
  with pytest.raises(ValueError, match="n_hashes must be an int >= 1, got 0"):
    attention.build("reformer", {"n_hashes": 0})
  with pytest.raises(ValueError, match="chunk_size must be an int >= 1, got 0"):
    attention.build("reformer", {"chunk_size": 0})
