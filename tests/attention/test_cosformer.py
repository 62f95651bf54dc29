"""cosFormer specifics: the implied weights by hand (per-segment M, fixed causal M), the causal forms, and the
causal_m limit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.attention as attention
from research.attention.masks import Segments
from research.attention.reference import reference_attention, relative_rms_error
from tests.attention.helpers import packed_segments, qkv

LENGTHS = [5, 9, 1, 7]  # packed into one row of 25 (3 padding)


def _hand_weights(q, k, lengths, row, causal, big_m=None, eps=1e-6):
  """relu(q_i)·relu(k_j) cos(π(i−j)/2M) on same-segment pairs (j ≤ i if causal), normalised with eps; i, j are
  positions inside the segment and M is its length (or big_m)."""
  rq, rk = np.maximum(np.asarray(q, np.float64), 0), np.maximum(np.asarray(k, np.float64), 0)
  b, _, h, _ = rq.shape
  a = np.zeros((b, h, row, row))
  start = 0
  for n in lengths:
    m = big_m or n
    for i in range(n):
      for j in range(i + 1 if causal else n):
        dot = np.einsum("bhd,bhd->bh", rq[:, start + i], rk[:, start + j])
        a[:, :, start + i, start + j] = dot * math.cos(math.pi * (i - j) / (2 * m))
    start += n
  return a / (a.sum(-1, keepdims=True) + eps)


def _weights(q, k, v, segments, causal, overrides=None):
  mixer = attention.build("cosformer", overrides)
  return jax.jit(lambda *a: mixer.apply({}, *a, causal, method="implied_weights"))(q, k, v, segments)


@pytest.mark.parametrize("causal", [False, True])
def test_implied_weights_by_hand_with_per_segment_m(causal):
  row = sum(LENGTHS) + 3
  q, k, v = qkv(jax.random.key(0), 1, row)
  weights = _weights(q, k, v, packed_segments(LENGTHS, row), causal, {"causal_m": 40})
  want = _hand_weights(q, k, LENGTHS, row, causal, big_m=40 if causal else None)
  np.testing.assert_allclose(weights, want, rtol=1e-5, atol=1e-7)
  if not causal:  # the re-weighting really uses each segment's own M, not the row length (or a global M)
    assert not np.allclose(weights, _hand_weights(q, k, LENGTHS, row, causal, big_m=row), rtol=1e-3, atol=1e-5)


def test_causal_forms_agree_and_match_the_reference():
  row = sum(LENGTHS) + 3
  q, k, v = qkv(jax.random.key(1), 2, row)
  segments = packed_segments(LENGTHS, row)
  segments = Segments(jnp.tile(segments.segment_ids, (2, 1)), jnp.tile(segments.positions, (2, 1)), 4)
  mixers = {
    form: attention.build("cosformer", {"causal_form": form, "chunk_size": 4})
    for form in ("parallel", "recurrent", "chunked")
  }

  @jax.jit
  def run(q, k, v, segments):  # one compile for every form and the oracle
    ref = reference_attention(mixers["chunked"].apply({}, q, k, v, segments, True, method="implied_weights"), v)
    return ref, {form: mixer.apply({}, q, k, v, segments, True) for form, mixer in mixers.items()}

  ref, outs = run(q, k, v, segments)
  for form, out in outs.items():
    assert relative_rms_error(out, ref) <= 1e-5, form


def test_causal_m_is_fixed_and_bounds_the_row_length():
  q, k, v = qkv(jax.random.key(2), 1, 16)
  mixer = attention.build("cosformer", {"causal_m": 8})
  shape_of = (
    lambda n, causal, method=None: jax.eval_shape(  # noqa: E731  (trace-time checks: nothing compiles)
      lambda q, k, v: mixer.apply({}, q, k, v, Segments.from_lengths(jnp.array([n]), n), causal, method=method),
      q[:, :n],
      k[:, :n],
      v[:, :n],
    )
  )
  with pytest.raises(ValueError, match=r"cosformer causal_m=8 is shorter than the row length 16"):
    shape_of(16, True)
  with pytest.raises(ValueError, match=r"causal_m=8 is shorter"):
    shape_of(16, True, "implied_weights")
  assert shape_of(8, True).shape == (1, 8, 2, 8)  # L = M is fine
  assert shape_of(16, False).shape == (1, 16, 2, 8)  # bidirectional ignores causal_m

  # causal: M does not depend on the sequence or row length, so a prefix is unchanged by what follows or pads it
  mixer = attention.build("cosformer", {"causal_m": 16})
  apply = jax.jit(lambda q, k, v, segments: mixer.apply({}, q, k, v, segments, True))
  full = apply(q, k, v, Segments.from_lengths(jnp.array([16]), 16))
  short = apply(q, k, v, Segments.from_lengths(jnp.array([9]), 16))
  np.testing.assert_allclose(short[:, :9], full[:, :9], rtol=1e-5, atol=1e-6)


def test_bad_config_is_a_clear_error():
  with pytest.raises(ValueError, match="cosformer causal_m must be positive, got 0"):
    attention.build("cosformer", {"causal_m": 0})
  with pytest.raises(ValueError, match="cosformer causal_form 'blocked'"):
    attention.build("cosformer", {"causal_form": "blocked"})
