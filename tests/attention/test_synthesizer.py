"""Synthesizer specifics: each mode against its numpy formula, random mode ignores q/k, packing by position, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.attention as attention
from research.attention.masks import Segments
from tests.attention.helpers import packed_segments, qkv

H, D, MAX_LEN = 2, 8, 12


def _softmax_np(x):
  x = x - x.max(-1, keepdims=True)
  return np.exp(x) / np.exp(x).sum(-1, keepdims=True)


def _random_params(mixer, q, segments, seed=0):
  """Parameters of the right shapes drawn in numpy (no initialiser compiles); {} when the mixer has none."""
  shapes = jax.eval_shape(lambda q: mixer.init(jax.random.key(0), q, q, q, segments, False), q)
  rng = np.random.default_rng(seed)
  draw = lambda leaf: rng.normal(size=leaf.value.shape).astype(np.float32)  # noqa: E731
  return jax.tree.map(draw, dict(shapes), is_leaf=lambda x: hasattr(x, "value"))


def _attend_np(logits_LxL, v_LxD, n, causal):
  """softmax over keys j < n (and j <= i when causal) of the given logits, times v; rows >= n are zero."""
  mask = np.tril(np.ones((n, n), bool)) if causal else np.ones((n, n), bool)
  w = _softmax_np(np.where(mask, logits_LxL[:n, :n], -np.inf))
  return w @ v_LxD[:n]


def _two_layer_np(p, x_LxHxD, h):
  hidden = np.maximum(x_LxHxD[:, h] @ p["w1"][h] + p["b1"][h], 0.0)
  return hidden @ p["w2"][h] + p["b2"][h]


@pytest.mark.parametrize("causal", [False, True])
def test_dense_matches_numpy_formula(causal):
  q, k, v = qkv(jax.random.key(0), 2, 9)
  segments = Segments.from_lengths(jnp.array([9, 6]), 9)
  mixer = attention.build("synthesizer", {"max_len": MAX_LEN})
  params = _random_params(mixer, q, segments)
  assert {n: x.shape for n, x in params["params"]["logits"]["f"].items()} == {
    "w1": (H, D, D),
    "b1": (H, D),
    "w2": (H, D, MAX_LEN),
    "b2": (H, MAX_LEN),
  }
  out = np.asarray(mixer.apply(params, q, k, v, segments, causal))
  p = params["params"]["logits"]["f"]
  for b, n in enumerate([9, 6]):
    for h in range(H):
      logits = _two_layer_np(p, np.asarray(q[b]), h)[:, :9]  # row i: ℓ logits from q_i, first L used
      np.testing.assert_allclose(out[b, :n, h], _attend_np(logits, np.asarray(v[b, :, h]), n, causal), atol=2e-5)
    np.testing.assert_array_equal(out[b, n:], 0.0)


def test_factorized_dense_is_the_flattened_outer_product():
  q, k, v = qkv(jax.random.key(1), 1, 7)
  segments = Segments.from_lengths(jnp.array([7]), 7)
  mixer = attention.build("synthesizer", {"max_len": MAX_LEN, "factorized": True})  # auto factors (3, 4)
  params = _random_params(mixer, q, segments)
  fa, fb = params["params"]["logits"]["f_a"], params["params"]["logits"]["f_b"]
  assert fa["w2"].shape == (H, D, 3) and fb["w2"].shape == (H, D, 4)
  out = np.asarray(mixer.apply(params, q, k, v, segments, False))
  for h in range(H):
    a, b = _two_layer_np(fa, np.asarray(q[0]), h), _two_layer_np(fb, np.asarray(q[0]), h)
    logits = (a[:, :, None] * b[:, None, :]).reshape(7, MAX_LEN)  # logits[p] = a[p // 4] · b[p % 4]
    np.testing.assert_allclose(out[0, :, h], _attend_np(logits[:, :7], np.asarray(v[0, :, h]), 7, False), atol=2e-5)


@pytest.mark.parametrize("factorized", [False, True])
def test_random_mode_ignores_q_and_k_and_matches_numpy(factorized):
  q, k, v = qkv(jax.random.key(2), 2, 8)
  segments = Segments.from_lengths(jnp.array([8, 5]), 8)
  mixer = attention.build("synthesizer", {"mode": "random", "max_len": MAX_LEN, "factorized": factorized, "rank": 3})
  params = _random_params(mixer, q, segments)
  apply = jax.jit(lambda q, k: mixer.apply(params, q, k, v, segments, True))
  out = np.asarray(apply(q, k))
  np.testing.assert_array_equal(out, np.asarray(apply(-3.0 * k, q + 1.0)))
  p = params["params"]["logits"]
  r = np.einsum("hpr,hqr->hpq", p["r1"], p["r2"]) if factorized else p["r"]
  assert r.shape == (H, MAX_LEN, MAX_LEN)
  for b, n in enumerate([8, 5]):
    for h in range(H):
      np.testing.assert_allclose(out[b, :n, h], _attend_np(r[h, :8, :8], np.asarray(v[b, :, h]), n, True), atol=2e-5)


@pytest.mark.parametrize("overrides", [{"mode": "random"}, {"mode": "random", "factorized": True}])
def test_random_mode_packed_equals_alone(overrides):
  """Logits are read at each token's position inside its segment, so packing is exact for every mode."""
  lengths, row = [3, 1, 5], 11
  q, k, v = qkv(jax.random.key(3), 1, row)
  mixer = attention.build("synthesizer", {"max_len": MAX_LEN, **overrides})
  params = _random_params(mixer, q, packed_segments(lengths, row))
  apply = jax.jit(lambda *a: mixer.apply(params, *a, True))
  packed = np.asarray(apply(q, k, v, packed_segments(lengths, row)))
  start = 0
  for n in lengths:
    piece = [x[:, start : start + n] for x in (q, k, v)]
    alone = np.asarray(apply(*piece, Segments.from_lengths(jnp.array([n]), n)))
    np.testing.assert_allclose(packed[0, start : start + n], alone[0], atol=2e-6, rtol=1e-5)
    start += n
  np.testing.assert_array_equal(packed[0, start:], 0.0)


def test_fixed_random_has_no_parameters_and_depends_only_on_the_seed():
  q, k, v = qkv(jax.random.key(4), 1, 6)
  segments = Segments.from_lengths(jnp.array([6]), 6)
  outs = []
  for seed in (0, 0, 1):
    mixer = attention.build("synthesizer", {"mode": "random", "trainable": False, "seed": seed, "max_len": MAX_LEN})
    assert jax.eval_shape(lambda q: mixer.init(jax.random.key(0), q, q, q, segments, False), q) == {}  # noqa: B023
    outs.append(np.asarray(mixer.apply({}, q, k, v, segments, False)))  # eager: the 3 calls share cached ops
  np.testing.assert_array_equal(outs[0], outs[1])
  assert not np.allclose(outs[0], outs[2])


def test_clear_errors():
  q = jnp.zeros((1, 13, H, D))
  mixer = attention.build("synthesizer", {"max_len": MAX_LEN})
  with pytest.raises(ValueError, match="sequence length 13 exceeds max_len=12"):
    jax.eval_shape(lambda q: mixer.init(jax.random.key(0), q, q, q, Segments.from_lengths(jnp.array([13]), 13)), q)
  with pytest.raises(ValueError, match="synthesizer mode 'sparse'; choose one of dense, random"):
    attention.make_config("synthesizer", {"mode": "sparse"})
  with pytest.raises(ValueError, match="factor=5 must be a divisor of max_len=12"):
    attention.make_config("synthesizer", {"max_len": 12, "factor": 5})
  assert attention.make_config("synthesizer", {"max_len": 512}).factors == (16, 32)
  with pytest.raises(ValueError, match="trainable=False applies to mode='random' only"):
    attention.make_config("synthesizer", {"trainable": False})
