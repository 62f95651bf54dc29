"""Sliding-window attention beyond the conformance suite: the band built explicitly in numpy, block sizes,
the full-window limit, no LxL in the compiled program, config errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.attention as attention
from research.attention.masks import Segments
from tests.attention.helpers import init_apply, packed_segments, qkv


@functools.cache
def runner(name: str, overrides: tuple = (), causal: bool = False, method: str | None = None):
  """One jitted init+apply per (variant, options, causal, method): tests reuse the compile across inputs."""
  mixer = attention.build(name, dict(overrides))

  def run(q, k, v, segments):
    variables = mixer.init(jax.random.key(0), q, k, v, segments, causal)
    return mixer.apply(variables, q, k, v, segments, causal, method=method)

  return jax.jit(run)


def np_masked_attention(q, k, v, mask_BxHxLxS):
  """fp64 numpy oracle: softmax over `mask` (zero rows where nothing is admissible)."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  s = np.einsum("blhd,bshd->bhls", q, k) / np.sqrt(q.shape[-1])
  s = np.where(mask_BxHxLxS, s, -np.inf)
  m = np.max(s, axis=-1, keepdims=True)
  p = np.where(mask_BxHxLxS, np.exp(s - np.where(np.isfinite(m), m, 0.0)), 0.0)
  w = p / np.maximum(p.sum(-1, keepdims=True), 1e-300)
  return np.einsum("bhls,bshd->blhd", w, v)


def np_segment_mask(ids_BxL, causal):
  ids = np.asarray(ids_BxL)
  mask = (ids[:, :, None] == ids[:, None, :]) & (ids[:, None, :] > 0)
  if causal:
    mask &= np.tril(np.ones(mask.shape[1:], bool))
  return mask[:, None]


def assert_no_square(name, overrides, length=384):
  """The lowered fwd+bwd program holds no LxL array (a cheap guard on top of test_memory's slope).

  Lowered only (no compile), with no variables: these mixers have no parameters (reformer recomputes its
  rotations from the seed when its collection is absent)."""
  mixer = attention.build(name, overrides)
  x = jnp.zeros((1, length, 2, 8))
  seg = Segments.from_lengths(jnp.array([length]), length)
  loss = lambda q, k, v: jnp.sum(mixer.apply({}, q, k, v, seg, False))  # noqa: E731
  hlo = jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, x, x).as_text()
  assert f"{length},{length}" not in hlo


@pytest.mark.parametrize("window,block_size,causal", [(2, 5, False), (3, None, True), (1, None, False)])
def test_equals_numpy_band(window, block_size, causal):
  q, k, v = qkv(jax.random.key(0), 2, 23)
  segments = packed_segments([9, 1, 8], 23)  # packing, a length-1 sequence and a padded tail
  segments = Segments(
    jnp.concatenate([segments.segment_ids, jnp.asarray([[1] * 20 + [0] * 3])]),
    jnp.concatenate([segments.positions, jnp.asarray([list(range(20)) + [0] * 3])]),
    3,
  )
  out = init_apply("local", q, k, v, segments, causal, {"window": window, "block_size": block_size})
  i, j = np.arange(23)[:, None], np.arange(23)[None, :]
  band = (i - j >= 0) & (i - j <= window) if causal else np.abs(i - j) <= window
  expect = np_masked_attention(q, k, v, np_segment_mask(segments.segment_ids, causal) & band)
  np.testing.assert_allclose(out, expect, atol=2e-6, rtol=1e-5)
  assert np.all(np.asarray(out)[0, 18:] == 0) and np.all(np.asarray(out)[1, 20:] == 0)


def test_window_covering_the_row_is_softmax():
  q, k, v = qkv(jax.random.key(1), 2, 12)
  segments = Segments.from_lengths(jnp.array([12, 7]), 12)
  out = init_apply("local", q, k, v, segments, False, {"window": 12})
  ref = init_apply("softmax", q, k, v, segments, False)
  np.testing.assert_allclose(out, ref, atol=2e-6, rtol=1e-5)


def test_no_square_array_in_the_program():
  assert_no_square("local", {"window": 4})


def test_config_errors_name_the_bad_value():
  with pytest.raises(ValueError, match="window must be an int >= 1, got 0"):
    attention.build("local", {"window": 0})
  with pytest.raises(ValueError, match="block_size must be None or an int >= window=8, got 4"):
    attention.build("local", {"window": 8, "block_size": 4})
