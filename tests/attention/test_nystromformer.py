"""Nyströmformer specifics: iterative pinv vs numpy, landmarks over the valid prefix, the exact formula, and
num_landmarks >= L recovering softmax attention."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.attention as attention
from research.attention.masks import Segments
from research.attention.nystromformer import iterative_pinv, landmark_assignment, nystrom_factors
from research.attention.reference import relative_rms_error
from research.attention.softmax import softmax_weights
from tests.attention.helpers import packed_segments, qkv


def _softmax_np(x):
  x = x - x.max(-1, keepdims=True)
  return np.exp(x) / np.exp(x).sum(-1, keepdims=True)


def _pinv_np(a, iterations):
  """The paper's iteration in float64 numpy (per-matrix ‖A‖_1 ‖A‖_∞ initialisation)."""
  eye = np.eye(len(a))
  z = a.T / (np.abs(a).sum(0).max() * np.abs(a).sum(1).max())
  for _ in range(iterations):
    az = a @ z
    z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
  return z


def _padded_pinv(a, iterations):
  """iterative_pinv of A = [[a, 0], [0, 0]] (two empty landmark slots), float64 numpy out."""
  padded = np.zeros((len(a) + 2, len(a) + 2))
  padded[: len(a), : len(a)] = a
  z = np.asarray(iterative_pinv(jnp.asarray(padded[None, None], jnp.float32), iterations), np.float64)[0, 0]
  np.testing.assert_array_equal(z[len(a) :], 0.0)  # the iteration keeps the empty slots' rows and columns zero
  np.testing.assert_array_equal(z[:, len(a) :], 0.0)
  np.testing.assert_allclose(z, _pinv_np(padded, iterations), rtol=1e-4, atol=1e-4 * np.abs(z).max())
  return z[: len(a), : len(a)]


def test_iterative_pinv_approximates_numpy_pinv():
  rng = np.random.default_rng(0)
  well = _softmax_np(3.0 * np.eye(6) + 0.5 * rng.normal(size=(6, 6)))  # cond ≈ 1.4
  np.testing.assert_allclose(_padded_pinv(well, 6), np.linalg.pinv(well), rtol=1e-5, atol=1e-5)  # the paper's 6
  generic = _softmax_np(3.0 * rng.normal(size=(6, 6)))  # poorly conditioned: 6 steps are far from converged
  ref = np.linalg.pinv(generic)
  assert np.abs(_padded_pinv(generic, 6) - ref).max() > 1e-2 * np.abs(ref).max()
  np.testing.assert_allclose(_padded_pinv(generic, 30), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_landmarks_are_contiguous_chunks_of_the_valid_prefix():
  segments = Segments.from_lengths(jnp.array([12, 10, 3, 0]), 12)
  onehot, landmark_valid = (np.asarray(x) for x in landmark_assignment(segments, 4))
  np.testing.assert_array_equal(onehot.sum(1), [[3, 3, 3, 3], [3, 2, 3, 2], [1, 1, 1, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(landmark_valid, [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0]])
  chunk = onehot.argmax(-1)
  np.testing.assert_array_equal(chunk[1, :10], [0, 0, 0, 1, 1, 2, 2, 2, 3, 3])  # ⌊t·4/10⌋
  np.testing.assert_array_equal(onehot[1, 10:], 0.0)  # padding belongs to no landmark


def test_matches_numpy_formula_with_fewer_landmarks_than_tokens():
  length, m = 11, 3
  q, k, v = qkv(jax.random.key(0), 2, length)
  lengths = [11, 7]
  segments = Segments.from_lengths(jnp.array(lengths), length)
  mixer = attention.build("nystromformer", {"num_landmarks": m})
  out = np.asarray(mixer.apply({}, q, k, v, segments, False))

  qn, kn, vn = (np.asarray(x, np.float64) for x in (q, k, v))
  for b, n in enumerate(lengths):
    for h in range(2):
      qv, kv, vv = qn[b, :n, h], kn[b, :n, h], vn[b, :n, h]
      ql = np.stack([qv[landmark_chunk(n, m, j)].mean(0) for j in range(m)])
      kl = np.stack([kv[landmark_chunk(n, m, j)].mean(0) for j in range(m)])
      f = _softmax_np(qv @ kl.T / np.sqrt(8))
      a = _softmax_np(ql @ kl.T / np.sqrt(8))
      bb = _softmax_np(ql @ kv.T / np.sqrt(8))
      want = f @ _pinv_np(a, 6) @ (bb @ vv)
      np.testing.assert_allclose(out[b, :n, h], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out[b, n:], 0.0)


def landmark_chunk(n, m, j):
  """Token indices of chunk j: {t < n : ⌊t·m/n⌋ = j} (m <= n), one contiguous run."""
  chunk = [t for t in range(n) if t * m // n == j]
  assert chunk and chunk == list(range(chunk[0], chunk[-1] + 1))
  return np.asarray(chunk)


@pytest.mark.parametrize("iterations,tolerance", [(6, 3e-2), (20, 1e-5)])
def test_num_landmarks_at_least_length_recovers_softmax(iterations, tolerance):
  """n <= m: every token is its own landmark and F A⁺ B = A A⁺ A = A (up to the pinv's convergence)."""
  q, k, v = qkv(jax.random.key(3), 2, 9)
  segments = Segments.from_lengths(jnp.array([9, 6]), 9)
  f, z, b = nystrom_factors(q, k, segments, num_landmarks=16, pinv_iterations=iterations)
  implied = jnp.einsum("bhlm,bhmn,bhns->bhls", f, z, b) * segments.valid[:, None, :, None]
  err = relative_rms_error(implied, softmax_weights(q, k, segments, causal=False))
  assert err <= tolerance, err


def test_clear_errors():
  q = jnp.zeros((1, 8, 2, 8))
  mixer = attention.build("nystromformer")
  with pytest.raises(ValueError, match="does not support packed rows"):
    mixer.apply({}, q, q, q, packed_segments([4, 4], 8), False)
  with pytest.raises(ValueError, match="does not support causal"):
    mixer.apply({}, q, q, q, Segments.from_lengths(jnp.array([8]), 8), True)
  with pytest.raises(ValueError, match="num_landmarks must be positive, got 0"):
    attention.make_config("nystromformer", {"num_landmarks": 0})


def test_extra_padding_changes_nothing_with_fewer_landmarks_and_empty_rows_are_zero():
  """The conformance suite checks length invariance at the default m = 64 (> L); here m = 4 < n."""
  q, k, v = qkv(jax.random.key(4), 2, 20)
  mixer = attention.build("nystromformer", {"num_landmarks": 4})

  def loss(q, k, v, segments):
    out = mixer.apply({}, q, k, v, segments, False)
    return jnp.sum(out * jnp.arange(out.size, dtype=out.dtype).reshape(out.shape) / out.size), out

  (_, _, dv), short = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(
    q, k, v, Segments.from_lengths(jnp.array([20, 0]), 20)
  )
  pad = [jnp.pad(x, ((0, 0), (0, 12), (0, 0), (0, 0)), constant_values=5.0) for x in (q, k, v)]
  long = jax.jit(lambda *a: loss(*a)[1])(*pad, Segments.from_lengths(jnp.array([20, 0]), 32))
  np.testing.assert_allclose(long[0, :20], short[0], atol=2e-6, rtol=1e-5)
  np.testing.assert_array_equal(short[1], 0.0)  # a row with no valid token
  assert np.isfinite(np.asarray(dv)).all()
  np.testing.assert_array_equal(dv[1], 0.0)
