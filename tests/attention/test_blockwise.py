"""The shared blockwise pieces: neighbour blocks, static bands, masked partial softmax and its exact merge."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from research.attention.blockwise import attend, band, merge, neighbours


def _np_softmax_attention(q, k, v, mask):
  s = np.einsum("...cd,...kd->...ck", q, k) / np.sqrt(q.shape[-1])
  s = np.where(mask, s, -np.inf)
  m = np.max(s, axis=-1, keepdims=True)
  p = np.where(mask, np.exp(s - np.where(np.isfinite(m), m, 0)), 0)
  return np.einsum("...ck,...kd->...cd", p, v) / np.maximum(p.sum(-1, keepdims=True), 1e-300)


def test_neighbours_and_band_match_brute_force():
  x = np.arange(2 * 4 * 3).reshape(2, 4, 3) + 1  # B=2, N=4 blocks of C=3
  got = np.asarray(jax.jit(lambda x: neighbours(x, 1, (-1, 0, 1), fill=0))(x))
  assert got.shape == (2, 4, 9)
  for n in range(4):
    for j, o in enumerate((-1, 0, 1)):
      expect = x[:, n + o] if 0 <= n + o < 4 else 0
      np.testing.assert_array_equal(got[:, n, 3 * j : 3 * j + 3], expect)
  c, offsets = 4, (-1, 0, 1)
  mask = band(c, offsets, -2, 3)
  for ci in range(c):
    for j, o in enumerate(offsets):
      for cj in range(c):
        diff = ci - (o * c + cj)
        assert mask[ci, j * c + cj] == (-2 <= diff <= 3)


def test_attend_and_merge_equal_softmax_over_the_union():
  rng = np.random.default_rng(0)
  q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((2, 5, 4), (2, 7, 4), (2, 7, 4)))
  mask = rng.random((2, 5, 7)) < 0.6
  mask[0, 1] = False  # a row with no key at all
  split = np.zeros(7, bool)
  split[[0, 3, 4]] = True  # two disjoint key sets

  @jax.jit
  def merged(q, k, v):
    parts = [attend(q, k, v, mask & s) for s in (split, ~split)]
    return merge(jnp.stack([p[0] for p in parts]), jnp.stack([p[1] for p in parts]))

  o, lse = merged(q, k, v)
  expect = _np_softmax_attention(*(x.astype(np.float64) for x in (q, k, v)), mask)
  np.testing.assert_allclose(o, expect, atol=1e-6)
  assert np.isneginf(lse[0, 1]) and np.all(np.asarray(o)[0, 1] == 0)
  assert np.all(np.isfinite(np.asarray(lse)[mask.any(-1)]))

  grads = jax.jit(jax.grad(lambda q, k, v: jnp.sum(merged(q, k, v)[0] ** 2), (0, 1, 2)))(q, k, v)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)  # no NaN from the empty row
