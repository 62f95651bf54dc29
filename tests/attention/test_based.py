"""Based specifics: the Taylor kernel by hand, the sliding-window combination against an explicit construction,
causal forms with the window, and the feature dimension in state_size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.attention as attention
from research.attention.based import feature_size, taylor_features, taylor_kernel
from research.attention.masks import Segments
from research.attention.reference import reference_attention, relative_rms_error
from tests.attention.helpers import packed_segments, qkv

LENGTH = 24


def _segments() -> Segments:
  """Row 0: four packed sequences [6, 1, 9, 5] and 3 padding; row 1: one sequence of 17 and 7 padding."""
  packed = packed_segments([6, 1, 9, 5], LENGTH)
  single = Segments.from_lengths(jnp.array([17]), LENGTH)
  return Segments(
    jnp.concatenate([packed.segment_ids, single.segment_ids]),
    jnp.concatenate([packed.positions, single.positions]),
    max_segments=4,
  )


@pytest.fixture(scope="module")
def setup():
  """One init (random projections are shared by every config below: the param tree does not depend on them)."""
  q, k, v = qkv(jax.random.key(0), 2, LENGTH)
  q = 2.0 * q  # larger scores: exp and its Taylor expansion differ visibly inside the window
  segments = _segments()
  mixer = attention.build("based")
  variables = jax.jit(mixer.init, static_argnums=5)(jax.random.key(1), q, k, v, segments, False)
  return variables, (q, k, v, segments)


def _apply(variables, inputs, causal, overrides=None, method=None):
  mixer = attention.build("based", overrides)
  return jax.jit(lambda *a: mixer.apply(variables, *a, causal, method=method))(*inputs)


def _projected(variables, q, k):
  """q̃, k̃ by hand in float64: Pᵀx / d'^{1/4}."""
  p = variables["params"]
  pq, pk = (np.asarray(p[n]["kernel"].value, np.float64) for n in ("q_proj", "k_proj"))
  scale = pq.shape[-1] ** -0.25
  return np.einsum("blhd,hdf->blhf", q, pq) * scale, np.einsum("blhd,hdf->blhf", k, pk) * scale


def test_taylor_features_dot_product_is_one_plus_s_plus_half_s_squared(setup):
  variables, (q, k, v, segments) = setup
  assert variables["params"]["q_proj"]["kernel"].names == ("heads", "kv", None)
  mixer = attention.build("based")
  qt, kt = jax.jit(lambda q, k: mixer.apply(variables, q, k, method="project"))(q, k)
  qt_hand, kt_hand = _projected(variables, np.asarray(q), np.asarray(k))
  np.testing.assert_allclose(qt, qt_hand, rtol=1e-5, atol=1e-6)
  phi_q, phi_k = taylor_features(qt), taylor_features(kt)
  assert phi_q.shape == (2, LENGTH, 2, 1 + 16 + 16 * 16)
  s = np.einsum("blhf,bshf->bhls", qt_hand, kt_hand)
  np.testing.assert_allclose(np.einsum("blhf,bshf->bhls", phi_q, phi_k), 1 + s + s * s / 2, rtol=1e-5, atol=1e-5)
  z = jnp.linspace(-50.0, 50.0, 10_001)
  assert float(jnp.min(taylor_kernel(z))) >= 0.5  # the normaliser is bounded away from zero


def test_state_size_reports_the_feature_dimension():
  caps = attention.capabilities("based")
  assert feature_size(16) == 273 == taylor_features(jnp.zeros((1, 1, 1, 16))).shape[-1]
  assert caps.state_size(128, 4, 64) == 4 * 4 * 273 * (64 + 1)  # (kv: F×D, z: F) per head, fp32
  assert caps.supports_causal and caps.supports_packing and caps.length_invariant


def _numpy_weights(qt, kt, ids, *, window, causal, eps=1e-6):
  """The documented combination, pair by pair: exact exp inside |i − j| < window, exp(−m)·Taylor outside."""
  b_size, length, heads, _ = qt.shape
  out = np.zeros((b_size, heads, length, length))
  for b in range(b_size):
    for h in range(heads):
      for i in range(length):
        if ids[b, i] == 0:
          continue
        allowed = [j for j in range(length) if ids[b, j] == ids[b, i] and (j <= i or not causal)]
        local = [j for j in allowed if abs(i - j) < window]
        s = {j: float(qt[b, i, h] @ kt[b, j, h]) for j in allowed}
        m = max([0.0] + [s[j] for j in local])
        a = {j: np.exp(s[j] - m) if j in local else np.exp(-m) * (1 + s[j] + s[j] ** 2 / 2) for j in allowed}
        total = sum(a.values())
        for j in allowed:
          out[b, h, i, j] = a[j] / (total + eps)
  return out


@pytest.mark.parametrize("causal", [False, True])
def test_windowed_implied_weights_match_explicit_construction(setup, causal):
  variables, (q, k, v, segments) = setup
  weights = _apply(variables, (q, k, v, segments), causal, {"window": 3}, method="implied_weights")
  qt, kt = _projected(variables, np.asarray(q), np.asarray(k))
  want = _numpy_weights(qt, kt, np.asarray(segments.segment_ids), window=3, causal=causal)
  assert np.abs(want).max() > 0 and weights.dtype == jnp.float32
  np.testing.assert_allclose(weights, want, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("causal", [False, True])
def test_windowed_fast_path_matches_reference_with_packing_and_padding(setup, causal):
  variables, inputs = setup
  forms = ("parallel", "recurrent", "chunked") if causal else ("chunked",)
  ref = reference_attention(_apply(variables, inputs, causal, {"window": 3}, method="implied_weights"), inputs[2])
  for form in forms:
    out = _apply(variables, inputs, causal, {"window": 3, "causal_form": form, "chunk_size": 5})
    assert relative_rms_error(out, ref) <= 1e-5, form
    np.testing.assert_array_equal(np.asarray(out)[0, 21:], 0.0)
    np.testing.assert_array_equal(np.asarray(out)[1, 17:], 0.0)
  if not causal:
    assert relative_rms_error(out, _apply(variables, inputs, causal)) > 1e-2  # the window changes the output


def test_window_covering_the_sequence_is_softmax_of_the_projected_scores(setup):
  variables, (q, k, v, segments) = setup
  weights = _apply(variables, (q, k, v, segments), True, {"window": LENGTH}, method="implied_weights")
  qt, kt = _projected(variables, np.asarray(q), np.asarray(k))
  s = np.einsum("blhf,bshf->bhls", qt, kt)
  mask = np.asarray(jnp.broadcast_to(attention.masks.attention_mask(segments, True), s.shape))
  e = np.where(mask, np.exp(s - np.where(mask, s, -np.inf).max(-1, keepdims=True).clip(0)), 0.0)
  want = e / np.maximum(e.sum(-1, keepdims=True), 1e-30)
  np.testing.assert_allclose(weights, want, rtol=2e-5, atol=1e-6)


def test_windowed_causal_outputs_ignore_the_future(setup):
  variables, (q, k, v, segments) = setup
  mixer = attention.build("based", {"window": 4, "chunk_size": 8})
  apply = jax.jit(lambda *a: mixer.apply(variables, *a, True))
  t = 13
  base = apply(q, k, v, segments)
  moved = apply(*(x.at[:, t].add(3.0) for x in (q, k, v)), segments)
  np.testing.assert_array_equal(np.asarray(moved)[:, :t], np.asarray(base)[:, :t])
  assert not np.allclose(np.asarray(moved)[:, t], np.asarray(base)[:, t])


def test_windowed_gradients_match_reference(setup):
  variables, (q, k, v, segments) = setup
  mixer = attention.build("based", {"window": 3, "chunk_size": 8})
  w = jax.random.normal(jax.random.key(6), q.shape)

  def fast(q, k, v):
    return jnp.sum(mixer.apply(variables, q, k, v, segments, True) * w)

  def ref(q, k, v):
    weights = mixer.apply(variables, q, k, v, segments, True, method="implied_weights")
    return jnp.sum(reference_attention(weights, v) * w)

  grads = [jax.jit(jax.grad(f, (0, 1, 2)))(q, k, v) for f in (fast, ref)]
  for g_fast, g_ref in zip(*grads, strict=True):
    assert np.isfinite(np.asarray(g_fast)).all()
    assert relative_rms_error(g_fast, g_ref) <= 1e-4


def test_bad_config_names_the_value_and_the_choices():
  with pytest.raises(ValueError, match=r"based causal_form 'blocked'; choose one of parallel, recurrent, chunked"):
    attention.make_config("based", {"causal_form": "blocked"})
  with pytest.raises(ValueError, match="based window must be >= 0"):
    attention.make_config("based", {"window": -1})
  with pytest.raises(ValueError, match="based feature_dim must be positive"):
    attention.make_config("based", {"feature_dim": 0})
