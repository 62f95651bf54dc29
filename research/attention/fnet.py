"""FNet Fourier mixing (Lee-Thorp et al. 2022, "FNet: Mixing Tokens with Fourier Transforms", arXiv:2105.03824).

FNet replaces attention by the real part of a 2-D discrete Fourier transform over the sequence and hidden axes:

    y = Re(DFT_seq(DFT_hidden(x))),   DFT_n(x)_k = Σ_{t<n} x_t exp(−2πi t k / n)

Here, within the uniform mixer signature, the transform is applied to v (q and k are ignored):

    out[b, k, :] = c · Re( Σ_{t<n_b} exp(−2πi t k / n_b) · DFT_hidden(v[b, t, :]) )   for k < n_b,   0 for k ≥ n_b

where n_b is the number of valid tokens of row b (rows are right-padded: tokens 0..n_b−1). The sequence DFT is
taken over the VALID length of each row, exactly (not the FFT of the zero-padded row, which is a different
transform with L frequencies), so a sequence's output does not depend on how much padding follows it
(length_invariant=True). It is computed in O(L log L) per channel for every row length at once with Bluestein's
chirp-z algorithm: with w_t = exp(−iπ t²/n),

    DFT_n(x)_k = w_k Σ_t (x_t w_t) conj(w_{k−t}),

a linear convolution done by FFTs of a fixed power-of-two size M ≥ 2L − 1 (t² mod 2n is formed exactly in int32,
so the chirp phases are exact at any length). This costs three length-M FFTs instead of one length-L FFT.

Deviations from FNet:
  * It mixes v, and the encoder's q/k/v projections and output projection surround it (FNet has none); q and k
    are ignored, so rotary positions would do nothing: positions=("learned",) only.
  * `feature_fft` picks the hidden-axis transform: "hidden" (default; one DFT over all H·D channels of v, FNet's
    d_model FFT), "head" (a DFT over each head's D channels), or "none" (sequence mixing only).
  * `norm`: "ortho" (default) scales by c = 1/√(n_b · F) (F = channels of the hidden DFT), a unitary transform,
    because this encoder is pre-LN and the unnormalised transform grows as √(n·F) in the residual stream;
    "backward" (c = 1) is FNet's unnormalised transform (FNet is post-LN, which absorbs the scale).
  * Padding handled as above; packed rows are rejected (each segment would need its own transform); no causal form.
  * There is no attention matrix (the hidden DFT mixes channels across heads): `implied_weights` raises.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.attention import check_call, register
from research.attention.masks import Segments, zero_padding

FEATURE_FFTS = ("hidden", "head", "none")
NORMS = ("ortho", "backward")


def fft_size(length: int) -> int:
  """M: the smallest power of two >= 2L − 1 (no wrap-around in the Bluestein convolution)."""
  return 1 << max(2 * length - 2, 0).bit_length()


def square_mod(m: jax.Array, mod: jax.Array, max_m: int) -> jax.Array:
  """m² mod `mod`, exactly in int32, for 0 <= m <= max_m and 0 < mod < 2^30 (double-and-add when m² overflows)."""
  m, mod = m.astype(jnp.int32), mod.astype(jnp.int32)
  if max_m * max_m < 2**31:
    return (m * m) % mod
  r = m % mod
  acc = jnp.zeros_like(r)
  for bit in reversed(range(max(max_m, 1).bit_length())):
    acc = (2 * acc) % mod
    acc = jnp.where((r >> bit) & 1 == 1, (acc + r) % mod, acc)
  return acc


def valid_length_dft(x_BxLxF: jax.Array, lengths_B: jax.Array) -> jax.Array:
  """X[b, k] = Σ_{t<n_b} x[b, t] exp(−2πi t k / n_b) for k < n_b, 0 for k ≥ n_b (Bluestein): complex64 BxLxF."""
  _, length, _ = x_BxLxF.shape
  m = fft_size(length)
  n_Bx1 = jnp.maximum(lengths_B, 1).astype(jnp.int32)[:, None]
  t_1xL = jnp.arange(length, dtype=jnp.int32)[None]
  phase_BxL = square_mod(t_1xL, 2 * n_Bx1, length - 1).astype(jnp.float32) / n_Bx1.astype(jnp.float32)
  w_BxL = jax.lax.complex(jnp.cos(jnp.pi * phase_BxL), -jnp.sin(jnp.pi * phase_BxL))  # exp(−iπ t²/n)
  valid_BxL = t_1xL < lengths_B[:, None]
  a_BxLxF = jnp.where(valid_BxL[..., None], x_BxLxF.astype(jnp.complex64) * w_BxL[..., None], 0)
  lag_M = np.minimum(np.arange(m), m - np.arange(m))  # |k − t| at each circular index
  chirp_BxM = jnp.where(jnp.asarray(lag_M < length)[None], jnp.conj(w_BxL)[:, np.minimum(lag_M, length - 1)], 0)
  conv_BxMxF = jnp.fft.ifft(jnp.fft.fft(a_BxLxF, n=m, axis=1) * jnp.fft.fft(chirp_BxM, axis=1)[..., None], axis=1)
  return jnp.where(valid_BxL[..., None], w_BxL[..., None] * conv_BxMxF[:, :length], 0)


def fourier_mix(v_BxLxHxD: jax.Array, segments: Segments, *, feature_fft: str, norm: str) -> jax.Array:
  """c · Re(DFT over each row's valid length ∘ DFT over the channels) of v: fp32 BxLxHxD, zero at padding."""
  b, length, h, d = v_BxLxHxD.shape
  x = jnp.where(segments.valid[:, :, None, None], v_BxLxHxD.astype(jnp.float32), 0.0)
  if feature_fft == "hidden":
    x_BxLxF, channels = jnp.fft.fft(x.reshape(b, length, h * d), axis=-1), h * d
  elif feature_fft == "head":
    x_BxLxF, channels = jnp.fft.fft(x, axis=-1).reshape(b, length, h * d), d
  else:
    x_BxLxF, channels = x.reshape(b, length, h * d).astype(jnp.complex64), 1
  lengths_B = segments.lengths()
  out = jnp.real(valid_length_dft(x_BxLxF, lengths_B))
  if norm == "ortho":
    out = out * jax.lax.rsqrt(jnp.maximum(lengths_B, 1).astype(jnp.float32) * channels)[:, None, None]
  return out.reshape(b, length, h, d)


@register(
  "fnet",
  supports_causal=False,
  supports_packing=False,
  length_invariant=True,
  positions=("learned",),
  complexity="O(N log N d)",
  state_size=lambda L, H, D: 8 * fft_size(L) * H * D,  # the complex64 length-M Bluestein buffer
  paper="Lee-Thorp et al. 2022, arXiv:2105.03824",
  implied_weights=False,
)
class FNetMixing(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    feature_fft: str = "hidden"  # "hidden" (over all H·D channels, FNet), "head" (per head), "none"
    norm: str = "ortho"  # "ortho": 1/√(n·channels); "backward": FNet's unnormalised transform

    def __post_init__(self):
      if self.feature_fft not in FEATURE_FFTS:
        raise ValueError(f"fnet feature_fft {self.feature_fft!r}; choose one of {', '.join(FEATURE_FFTS)}")
      if self.norm not in NORMS:
        raise ValueError(f"fnet norm {self.norm!r}; choose one of {', '.join(NORMS)}")

  cfg: Config = Config()

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("fnet", segments, causal)
    if v.shape[1] > 2**29:
      raise ValueError(f"fnet: sequence length {v.shape[1]} is too long for the int32 chirp phases (max 2^29)")
    out = fourier_mix(v, segments, feature_fft=self.cfg.feature_fft, norm=self.cfg.norm)
    return zero_padding(out.astype(v.dtype), segments)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    raise ValueError(
      "fnet has no implied attention matrix: Fourier mixing transforms v over the sequence and channel axes "
      "together, so it is not a per-head weighted sum of values"
    )
