"""FNet specifics: Re(fft2) over each row's valid region (numpy), the Bluestein DFT, exact chirp phases, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.attention as attention
from research.attention.fnet import fft_size, square_mod, valid_length_dft
from research.attention.masks import Segments
from tests.attention.helpers import packed_segments, qkv

LENGTHS = [9, 6, 1]


def _apply(overrides, v, segments, q=None, k=None):
  mixer = attention.build("fnet", overrides)
  q, k = (v if x is None else x for x in (q, k))
  return np.asarray(jax.jit(lambda q, k, v, s: mixer.apply({}, q, k, v, s, False))(q, k, v, segments))


@pytest.mark.parametrize("feature_fft", ["hidden", "head", "none"])
def test_matches_numpy_fft_over_the_valid_region(feature_fft):
  q, k, v = qkv(jax.random.key(0), 3, 9, h=2, d=4)
  v = v.at[1, 6:].set(7.0)  # garbage under the padding must not leak
  segments = Segments.from_lengths(jnp.array(LENGTHS), 9)
  overrides = {"feature_fft": feature_fft, "norm": "backward"}
  out = _apply(overrides, v, segments, q, k)
  np.testing.assert_array_equal(_apply(overrides, v, segments, -q, 2 * k), out)  # q and k are ignored
  vn = np.asarray(v, np.float64)
  for b, n in enumerate(LENGTHS):
    x = vn[b, :n]  # n x H x D, the valid region only
    if feature_fft == "hidden":
      want = np.real(np.fft.fft2(x.reshape(n, 8))).reshape(n, 2, 4)  # FNet: Re(FFT_seq(FFT_hidden(x)))
    elif feature_fft == "head":
      want = np.real(np.fft.fft(np.fft.fft(x, axis=-1), axis=0))
    else:
      want = np.real(np.fft.fft(x, axis=0))
    np.testing.assert_allclose(out[b, :n], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    np.testing.assert_array_equal(out[b, n:], 0.0)


def test_ortho_norm_is_the_unitary_scaling_and_differs_from_the_padded_fft():
  _, _, v = qkv(jax.random.key(1), 2, 9, h=2, d=4)
  segments = Segments.from_lengths(jnp.array([9, 6]), 9)
  ortho = _apply(None, v, segments)  # the default: norm="ortho", feature_fft="hidden"
  backward = _apply({"norm": "backward"}, v, segments)
  np.testing.assert_allclose(ortho[0], backward[0] / np.sqrt(9 * 8), rtol=1e-6)
  np.testing.assert_allclose(ortho[1], backward[1] / np.sqrt(6 * 8), rtol=1e-6)
  padded = np.real(np.fft.fft2(np.asarray(v[1]).reshape(9, 8) * (np.arange(9) < 6)[:, None]))[:6]
  assert not np.allclose(backward[1, :6].reshape(6, 8), padded, atol=1e-3)  # the zero-padded FFT is another map


def test_bluestein_dft_for_every_length():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 13, 3)) + 1j * rng.normal(size=(5, 13, 3))
  lengths = np.array([13, 12, 7, 2, 1])
  out = np.asarray(valid_length_dft(jnp.asarray(x, jnp.complex64), jnp.asarray(lengths)))
  for b, n in enumerate(lengths):
    want = np.fft.fft(x[b, :n], axis=0)
    np.testing.assert_allclose(out[b, :n], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    np.testing.assert_array_equal(out[b, n:], 0.0)
  assert [fft_size(n) for n in (1, 2, 20, 32, 33)] == [1, 4, 64, 64, 128]


def test_chirp_phases_are_exact_beyond_int32_squares():
  m = np.array([0, 1, 46340, 46341, 99999, 123456, 2**20 - 1], np.int64)
  mod = np.array([2, 3, 92682, 100003, 200000, 2 * 123457, 2**21], np.int64)
  got = np.asarray(square_mod(jnp.asarray(m, jnp.int32), jnp.asarray(mod, jnp.int32), int(m.max())))
  np.testing.assert_array_equal(got, (m * m) % mod)


def test_clear_errors():
  _, _, v = qkv(jax.random.key(2), 1, 8)
  mixer = attention.build("fnet")
  with pytest.raises(ValueError, match="^fnet has no implied attention matrix"):
    mixer.apply({}, v, v, v, Segments.from_lengths(jnp.array([8]), 8), False, method="implied_weights")
  with pytest.raises(ValueError, match="does not support packed rows"):
    mixer.apply({}, v, v, v, packed_segments([4, 4], 8), False)
  with pytest.raises(ValueError, match="does not support causal"):
    mixer.apply({}, v, v, v, Segments.from_lengths(jnp.array([8]), 8), True)
  with pytest.raises(ValueError, match="fnet feature_fft 'rows'; choose one of hidden, head, none"):
    attention.make_config("fnet", {"feature_fft": "rows"})
  with pytest.raises(ValueError, match="fnet norm 'forward'; choose one of ortho, backward"):
    attention.make_config("fnet", {"norm": "forward"})
  assert not attention.capabilities("fnet").implied_weights
