"""Linear-attention specifics: the three causal forms agree, and state carries across calls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.attention.linear import FEATURE_MAPS, linear_attention, segment_features
from research.attention.masks import Segments
from research.attention.reference import relative_rms_error
from tests.attention.helpers import packed_segments, qkv


def _features(seed, length, segments):
  q, k, v = qkv(jax.random.key(seed), segments.segment_ids.shape[0], length)
  phi = FEATURE_MAPS["elu+1"]
  return segment_features(phi(q), segments), segment_features(phi(k), segments), v


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
def test_causal_forms_agree_on_packed_rows(chunk_size):
  segments = packed_segments([6, 1, 11, 9], 30)
  phi_q, phi_k, v = _features(0, 30, segments)
  outs = {
    form: linear_attention(phi_q, phi_k, v, causal=True, form=form, chunk_size=chunk_size)
    for form in ("parallel", "recurrent", "chunked")
  }
  for form in ("recurrent", "chunked"):
    assert relative_rms_error(outs[form][0], outs["parallel"][0]) <= 1e-5
    for got, want in zip(outs[form][1], outs["parallel"][1], strict=True):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_initial_state_streams_a_sequence_in_two_calls(causal):
  segments = Segments.from_lengths(jnp.array([40]), 40)
  phi_q, phi_k, v = _features(1, 40, segments)
  whole, whole_state = linear_attention(phi_q, phi_k, v, causal=True, chunk_size=8)
  first, state = linear_attention(phi_q[:, :25], phi_k[:, :25], v[:, :25], causal=True, chunk_size=8)
  second, final = linear_attention(
    phi_q[:, 25:], phi_k[:, 25:], v[:, 25:], causal=True, chunk_size=8, initial_state=state
  )
  np.testing.assert_allclose(jnp.concatenate([first, second], 1), whole, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(final[0], whole_state[0], rtol=1e-5, atol=1e-5)
  if not causal:  # the bidirectional state is the sum over both halves
    _, s1 = linear_attention(phi_q[:, :25], phi_k[:, :25], v[:, :25], causal=False)
    _, s2 = linear_attention(phi_q[:, 25:], phi_k[:, 25:], v[:, 25:], causal=False, initial_state=s1)
    np.testing.assert_allclose(s2[0], whole_state[0], rtol=1e-5, atol=1e-5)


def test_unknown_causal_form_is_a_clear_error():
  segments = Segments.from_lengths(jnp.array([4]), 4)
  phi_q, phi_k, v = _features(2, 4, segments)
  with pytest.raises(ValueError, match="unknown causal form 'blocked'"):
    linear_attention(phi_q, phi_k, v, causal=True, form="blocked")


@pytest.mark.parametrize("causal", [False, True])
def test_identity_feature_map_unnormalised_with_output_norm(causal):
  from research.attention import build
  from tests.attention.helpers import init_apply, reference_output

  with pytest.raises(ValueError, match="identity' needs normalize=False"):
    build("linear", {"feature_map": "identity"})
  opts = {"feature_map": "identity", "normalize": False, "chunk_size": 8}
  q, k, v = qkv(jax.random.key(3), 2, 20)
  segments = Segments.from_lengths(jnp.array([20, 11]), 20)
  out = init_apply("linear", q, k, v, segments, causal, overrides=opts)
  mixer = build("linear", opts)
  ref = reference_output(mixer, {}, q, k, v, segments, causal)
  assert relative_rms_error(out, ref) <= 1e-5
  # without the norm: exactly q (Σ kᵀv) on valid tokens
  mask = np.tril(np.ones((20, 20))) if causal else np.ones((20, 20))
  raw = np.einsum("lhd,shd,ls,she->lhe", q[1, :11], k[1, :11], mask[:11, :11], v[1, :11])
  want = raw / np.sqrt(np.mean(raw**2, -1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(out[1, :11], want, rtol=2e-4, atol=2e-5)
  np.testing.assert_array_equal(np.asarray(out[1, 11:]), 0.0)
