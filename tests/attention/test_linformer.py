"""Linformer specifics: the exact formula against numpy, E = F = I reduces to softmax, parameters, clear errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.attention as attention
from research.attention.masks import Segments
from research.attention.softmax import softmax_attention
from tests.attention.helpers import packed_segments, qkv


def _param_shapes(overrides, q, segments):
  """Parameter shapes without running the initialisers (eval_shape compiles nothing)."""
  mixer = attention.build("linformer", overrides)
  shapes = jax.eval_shape(lambda q: mixer.init(jax.random.key(0), q, q, q, segments, False), q)
  return mixer, {name: leaf.value.shape for name, leaf in shapes["params"]["projections"].items()}


def _softmax_np(x):
  x = x - x.max(-1, keepdims=True)
  return np.exp(x) / np.exp(x).sum(-1, keepdims=True)


def test_matches_numpy_formula_with_padding_and_per_head_projections():
  length, max_len, proj_dim = 9, 12, 4
  q, k, v = qkv(jax.random.key(0), 2, length)
  segments = Segments.from_lengths(jnp.array([9, 5]), length)
  mixer, shapes = _param_shapes({"proj_dim": proj_dim, "max_len": max_len, "sharing": "none"}, q, segments)
  assert shapes == {"E": (2, proj_dim, max_len), "F": (2, proj_dim, max_len)}
  rng = np.random.default_rng(0)
  e, f = (rng.normal(size=(2, proj_dim, max_len)).astype(np.float32) for _ in range(2))
  out = np.asarray(
    jax.jit(mixer.apply, static_argnums=5)({"params": {"projections": {"E": e, "F": f}}}, q, k, v, segments, False)
  )

  qn, kn, vn = (np.asarray(x, np.float64) for x in (q, k, v))
  for b, n in enumerate([9, 5]):
    for h in range(2):
      ek = e[h, :, :n] @ kn[b, :n, h]  # padded keys/values contribute nothing; columns n.. of E are unused
      fv = f[h, :, :n] @ vn[b, :n, h]
      want = _softmax_np(qn[b, :n, h] @ ek.T / np.sqrt(8)) @ fv
      np.testing.assert_allclose(out[b, :n, h], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[b, n:], 0.0)


def test_identity_projection_reduces_to_softmax_attention():
  """k = L = max_len and E = F = I: E k = k, F v = v, so Linformer is exactly softmax attention (full rows)."""
  length = 6
  q, k, v = qkv(jax.random.key(1), 2, length)
  segments = Segments.from_lengths(jnp.array([length, length]), length)
  mixer, shapes = _param_shapes({"proj_dim": length, "max_len": length, "sharing": "kv"}, q, segments)
  assert shapes == {"E": (length, length)}  # sharing="kv": one matrix, E = F
  variables = {"params": {"projections": {"E": jnp.eye(length)}}}
  out, weights, want = jax.jit(
    lambda q, k, v: (
      mixer.apply(variables, q, k, v, segments, False),
      mixer.apply(variables, q, k, v, segments, False, method="implied_weights"),
      softmax_attention(q, k, v, segments, causal=False),
    )
  )(q, k, v)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)  # F = I: the implied rows are the softmax rows


def test_headwise_sharing_is_the_default_and_slices_to_the_batch_length():
  q = jnp.zeros((1, 5, 3, 8))
  segments = Segments.from_lengths(jnp.array([5]), 5)
  _, shapes = _param_shapes(None, q, segments)
  cfg = attention.make_config("linformer")
  assert cfg.sharing == "headwise" and shapes == {"E": (cfg.proj_dim, cfg.max_len), "F": (cfg.proj_dim, cfg.max_len)}


def test_clear_errors():
  q = jnp.zeros((1, 9, 2, 8))
  with pytest.raises(ValueError, match="sequence length 9 exceeds max_len=8"):
    _param_shapes({"max_len": 8}, q, Segments.from_lengths(jnp.array([9]), 9))
  with pytest.raises(ValueError, match="does not support packed rows"):
    _param_shapes(None, q[:, :8], packed_segments([4, 4], 8))
  with pytest.raises(ValueError, match="does not support causal"):
    mixer = attention.build("linformer")
    jax.eval_shape(lambda q: mixer.init(jax.random.key(0), q, q, q, Segments.from_lengths(jnp.array([9]), 9), True), q)
  with pytest.raises(ValueError, match="linformer sharing 'layerwise'; choose one of none, headwise, kv"):
    attention.make_config("linformer", {"sharing": "layerwise"})
  with pytest.raises(ValueError, match="proj_dim must be positive, got 0"):
    attention.make_config("linformer", {"proj_dim": 0})
