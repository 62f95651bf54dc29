"""The decayed-linear-attention core shared by retention and GLA: state streams across calls, segment sums are exact
range sums, packing resets never produce NaN (values or gradients). The forms are compared on packed rows through
each mixer in test_retention.py (one decay per head) and test_gla.py (one per key dimension)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.attention.decay import (
  decay_attention,
  decay_matrix,
  gated_weights,
  mask_padding,
  segment_log_decay,
  segment_positions,
  segsum,
)
from research.attention.masks import Segments
from research.attention.reference import reference_attention, relative_rms_error

# Rows of one batch, used by the retention and GLA tests (whose forms tests run this core through each mixer):
# packed layouts with segments of length 1, an empty tail, a full row and a mostly-padded row.
LAYOUTS = [[6, 1, 11, 9], [1, 1, 13, 1], [30], [2]]
ROW = 30


def packed_rows(layouts: list[list[int]], row: int) -> Segments:
  """One row per layout, sequences back to back (ids 1..n, positions restarting), then padding."""
  ids, pos = np.zeros((len(layouts), row), np.int32), np.zeros((len(layouts), row), np.int32)
  for b, lengths in enumerate(layouts):
    start = 0
    for i, n in enumerate(lengths):
      ids[b, start : start + n], pos[b, start : start + n] = i + 1, np.arange(n)
      start += n
    assert start <= row
  return Segments(jnp.asarray(ids), jnp.asarray(pos), max_segments=max(map(len, layouts)))


def _inputs(seed: int, segments: Segments, per_dim: bool, h: int = 2, d: int = 8):
  keys = jax.random.split(jax.random.key(seed), 4)
  b, length = segments.segment_ids.shape
  q, k, v = (mask_padding(jax.random.normal(key, (b, length, h, d)), segments) for key in keys[:3])
  # decays from 0.05 to 1 (per dimension) or 0.6 to 1 (per head); garbage under padding must not matter
  g = -jax.random.uniform(keys[3], (b, length, h, d if per_dim else 1), maxval=3.0 if per_dim else 0.5)
  return q, k, v, g


def test_initial_state_streams_a_packed_row_in_two_calls():
  """Chunked form, per-dimension decays (per-head ones share the state code). The split at 10 falls inside the
  second sequence and inside a chunk; the second call starts from the first call's final state."""
  segments = packed_rows([[7, 12, 5]], 26)
  q, k, v, g = _inputs(1, segments, per_dim=True)
  g = segment_log_decay(g, segments)

  @jax.jit
  def run(q, k, v, g):
    call = lambda q, k, v, g, state: decay_attention(  # noqa: E731
      q, k, v, g, causal=True, chunk_size=8, sub_chunk_size=4, initial_state=state
    )
    first, state = call(q[:, :10], k[:, :10], v[:, :10], g[:, :10], None)
    second, final = call(q[:, 10:], k[:, 10:], v[:, 10:], g[:, 10:], state)
    return call(q, k, v, g, None), (jnp.concatenate([first, second], 1), final)

  (whole, whole_state), (streamed, final) = run(q, k, v, g)
  np.testing.assert_allclose(streamed, whole, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(final, whole_state, rtol=1e-5, atol=1e-5)


def test_segment_sums_are_exact_range_sums_and_resets_zero_every_crossing_range():
  x = -jax.random.uniform(jax.random.key(3), (7,))
  s = np.asarray(segsum(x))
  for i in range(7):
    for j in range(i + 1):
      np.testing.assert_allclose(s[i, j], np.sum(np.asarray(x)[j + 1 : i + 1]), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(decay_matrix(x), np.tril(np.exp(s)), rtol=1e-6)
  assert np.all(np.asarray(decay_matrix(x, strict=True)).diagonal() == 0.0)
  reset = np.asarray(decay_matrix(x.at[3].set(-jnp.inf)))  # -inf at token 3: every range (j, i] holding it is 0
  assert not np.any(np.isnan(reset))
  np.testing.assert_array_equal(reset[3:, :3], 0.0)
  np.testing.assert_allclose(reset[3:, 3:], np.tril(np.exp(s[3:, 3:])), rtol=1e-6)


def test_resets_give_finite_gradients_equal_to_the_definition():
  segments = packed_rows([[5, 1, 9], [4]], 16)
  q, k, v, g = _inputs(4, segments, per_dim=True)
  w = jax.random.normal(jax.random.key(5), q.shape)

  def chunked(q, k, v, g):
    q, k, v = (mask_padding(x, segments) for x in (q, k, v))  # as the mixers do
    out, _ = decay_attention(
      q,
      k,
      v,
      segment_log_decay(g, segments),
      g_backward_BxLxHxG=segment_log_decay(g, segments, reverse=True),
      causal=False,
      chunk_size=8,
      sub_chunk_size=4,
    )
    return jnp.sum(out * w)

  def definition(q, k, v, g):
    return jnp.sum(reference_attention(gated_weights(q, k, g, segments, causal=False), v) * w)

  grads = jax.jit(lambda *a: [jax.grad(f, (0, 1, 2, 3))(*a) for f in (chunked, definition)])(q, k, v, g)
  for got, want in zip(*grads, strict=True):
    assert np.all(np.isfinite(got))
    assert relative_rms_error(got, want) <= 1e-5


def test_segment_positions_and_resets():
  segments = packed_rows([[3, 1, 2]], 8)
  position, length = segment_positions(segments)
  np.testing.assert_array_equal(position[0], [0, 1, 2, 0, 0, 1, 0, 0])
  np.testing.assert_array_equal(length[0], [3, 3, 3, 1, 2, 2, 0, 0])
  g = jnp.full((1, 8, 1, 1), -0.5)
  forward, backward = segment_log_decay(g, segments), segment_log_decay(g, segments, reverse=True)
  np.testing.assert_array_equal(forward[0, :, 0, 0], [-np.inf, -0.5, -0.5, -np.inf, -np.inf, -0.5, 0, 0])
  np.testing.assert_array_equal(backward[0, :, 0, 0], [-0.5, -0.5, -np.inf, -np.inf, -0.5, -np.inf, 0, 0])


def test_clear_errors():
  q = jnp.ones((1, 4, 1, 2))
  g = jnp.zeros((1, 4, 1, 1))
  with pytest.raises(ValueError, match="unknown causal form 'blocked'; choose one of parallel, recurrent, chunked"):
    decay_attention(q, q, q, g, causal=True, form="blocked")
  with pytest.raises(ValueError, match="chunk_size=6 must be a positive multiple of sub_chunk_size=4"):
    decay_attention(q, q, q, jnp.zeros((1, 4, 1, 2)), causal=True, chunk_size=6, sub_chunk_size=4)
  with pytest.raises(ValueError, match="expected 1 or 2"):
    decay_attention(q, q, q, jnp.zeros((1, 4, 1, 3)), causal=True)
  with pytest.raises(ValueError, match="initial_state"):
    decay_attention(q, q, q, g, causal=False, initial_state=jnp.zeros((1, 1, 2, 2)))
