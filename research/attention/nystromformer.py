"""Nyströmformer (Xiong et al. 2021, "Nyströmformer: A Nyström-Based Algorithm for Approximating Self-Attention",
arXiv:2102.03902).

With m landmarks q̃_j, k̃_j (means of contiguous chunks of the queries and keys), per head:

    F = softmax(q k̃ᵀ / √D)   (L×m),   A = softmax(q̃ k̃ᵀ / √D)   (m×m),   B = softmax(q̃ kᵀ / √D)   (m×S)
    out = F · A⁺ · (B v)

A⁺ is the paper's iterative Moore-Penrose pseudo-inverse (Razavi et al. 2014), `pinv_iterations` = 6 steps of

    Z_0 = Aᵀ / (‖A‖_1 ‖A‖_∞),    Z_{j+1} = ¼ Z_j (13 I − A Z_j (15 I − A Z_j (7 I − A Z_j)))

with ‖A‖_1 the largest column sum and ‖A‖_∞ the largest row sum of |A|, per (batch, head) matrix, as written in
the paper. The exact attention matrix it implies (out = W v) is W = F A⁺ B (`implied_weights`).

Padding (the paper pads every sequence to a multiple of m and averages over the padding too): landmarks are
taken over the VALID prefix only. A row with n valid tokens uses m' = min(m, n) landmarks; token t < n belongs to
chunk ⌊t·m'/n⌋, so the chunks are contiguous, non-empty, and their sizes differ by at most one (exactly n/m each
when m divides n, the paper's segment means). Landmark slots m'..m−1 are empty: they are masked out of the softmax
in F and A (columns) and their rows of A and B are zero, so A = [[A', 0], [0, 0]], which the iteration keeps
block-structured, and A⁺ = [[A'⁺, 0], [0, 0]]. Padded keys are masked in B; padded query rows are zero. A sequence's
output therefore depends only on its valid tokens: the mixer is length-invariant (extra padding changes nothing).
When n ≤ m every token is its own landmark, F = A' = B = softmax(q kᵀ/√D) over the valid tokens, and
F A'⁺ B = A' A'⁺ A' = A' exactly for the true pseudo-inverse: the output is softmax attention up to the
convergence error of the iterative pseudo-inverse.

Deviations: the official code's optional depthwise-convolution skip on v (kernel 33) is omitted (the encoder
has its own `conv_kernel`); the paper's 1/D^¼ scaling of q and k is written as the equivalent 1/√D on the logits;
the m×m pseudo-inverse runs in fp32 at HIGHEST matmul precision (it is a few m×m products and is sensitive to
TF32 rounding). Non-causal only; packed rows are rejected (landmarks would have to be taken per segment).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.attention import check_call, register
from research.attention.masks import Segments, zero_padding

_HIGHEST = jax.lax.Precision.HIGHEST


def masked_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """softmax over the last axis restricted to `mask`; exact zeros elsewhere (and in rows with nothing valid)."""
  logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
  return jnp.where(mask, jax.nn.softmax(logits, axis=-1), 0.0)


def iterative_pinv(a_BxHxMxM: jax.Array, iterations: int = 6) -> jax.Array:
  """The paper's iterative Moore-Penrose pseudo-inverse (fp32, per-matrix ‖A‖_1 ‖A‖_∞ initialisation)."""
  a = a_BxHxMxM.astype(jnp.float32)
  abs_a = jnp.abs(a)
  norm_1 = jnp.max(jnp.sum(abs_a, axis=-2), axis=-1)  # largest column sum
  norm_inf = jnp.max(jnp.sum(abs_a, axis=-1), axis=-1)  # largest row sum
  denom = norm_1 * norm_inf
  z = jnp.swapaxes(a, -1, -2) / jnp.where(denom > 0, denom, 1.0)[..., None, None]
  eye = jnp.eye(a.shape[-1], dtype=jnp.float32)
  mm = lambda x, y: jnp.matmul(x, y, precision=_HIGHEST)  # noqa: E731
  for _ in range(iterations):
    az = mm(a, z)
    z = 0.25 * mm(z, 13 * eye - mm(az, 15 * eye - mm(az, 7 * eye - az)))
  return z


def landmark_assignment(segments: Segments, num_landmarks: int) -> tuple[jax.Array, jax.Array]:
  """(onehot_BxLxM fp32: token t < n in chunk ⌊t·min(m, n)/n⌋, zero rows at padding; landmark_valid_BxM)."""
  length = segments.segment_ids.shape[1]
  m = min(num_landmarks, length)  # slots beyond L are always empty
  n_Bx1 = segments.lengths()[:, None]
  m_eff_Bx1 = jnp.minimum(n_Bx1, m)
  t_1xL = jnp.arange(length, dtype=jnp.int32)[None]
  chunk_BxL = (t_1xL * m_eff_Bx1) // jnp.maximum(n_Bx1, 1)
  onehot_BxLxM = jax.nn.one_hot(chunk_BxL, m, dtype=jnp.float32) * segments.valid[:, :, None]
  return onehot_BxLxM, jnp.arange(m)[None] < m_eff_Bx1


def nystrom_factors(q_BxLxHxD, k_BxSxHxD, segments: Segments, *, num_landmarks: int, pinv_iterations: int):
  """(F BxHxLxM, A⁺ BxHxMxM, B BxHxMxS), fp32; F's padded query rows are not zeroed here."""
  q, k = q_BxLxHxD.astype(jnp.float32), k_BxSxHxD.astype(jnp.float32)
  scale = q.shape[-1] ** -0.5
  onehot_BxLxM, landmark_valid_BxM = landmark_assignment(segments, num_landmarks)
  counts_BxMx1x1 = jnp.maximum(jnp.sum(onehot_BxLxM, axis=1), 1.0)[:, :, None, None]
  q_land_BxMxHxD = jnp.einsum("blm,blhd->bmhd", onehot_BxLxM, q, precision=_HIGHEST) / counts_BxMx1x1
  k_land_BxMxHxD = jnp.einsum("blm,blhd->bmhd", onehot_BxLxM, k, precision=_HIGHEST) / counts_BxMx1x1

  col_Bx1x1xM = landmark_valid_BxM[:, None, None, :]
  row_Bx1xMx1 = landmark_valid_BxM[:, None, :, None]
  key_valid_Bx1x1xS = segments.valid[:, None, None, :]
  f_BxHxLxM = masked_softmax(jnp.einsum("blhd,bmhd->bhlm", q, k_land_BxMxHxD) * scale, col_Bx1x1xM)
  a_BxHxMxM = masked_softmax(jnp.einsum("bmhd,bnhd->bhmn", q_land_BxMxHxD, k_land_BxMxHxD) * scale, col_Bx1x1xM)
  a_BxHxMxM = jnp.where(row_Bx1xMx1, a_BxHxMxM, 0.0)
  b_BxHxMxS = masked_softmax(jnp.einsum("bmhd,bshd->bhms", q_land_BxMxHxD, k) * scale, key_valid_Bx1x1xS)
  b_BxHxMxS = jnp.where(row_Bx1xMx1, b_BxHxMxS, 0.0)
  return f_BxHxLxM, iterative_pinv(a_BxHxMxM, pinv_iterations), b_BxHxMxS


@register(
  "nystromformer",
  supports_causal=False,
  supports_packing=False,
  length_invariant=True,
  positions=("learned", "rope"),
  complexity="O(N m d)",
  state_size=lambda L, H, D: 4 * H * (2 * L * 64 + 64 * 64 + 64 * D),  # F, B, A⁺, B v at the default m = 64
  paper="Xiong et al. 2021, arXiv:2102.03902",
)
class NystromformerAttention(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    num_landmarks: int = 64  # m
    pinv_iterations: int = 6  # the paper's 6 steps of the iterative pseudo-inverse

    def __post_init__(self):
      if self.num_landmarks <= 0:
        raise ValueError(f"nystromformer num_landmarks must be positive, got {self.num_landmarks}")
      if self.pinv_iterations < 0:
        raise ValueError(f"nystromformer pinv_iterations must be >= 0, got {self.pinv_iterations}")

  cfg: Config = Config()

  def _factors(self, q, k, segments: Segments):
    return nystrom_factors(
      q, k, segments, num_landmarks=self.cfg.num_landmarks, pinv_iterations=self.cfg.pinv_iterations
    )

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("nystromformer", segments, causal)
    f_BxHxLxM, a_pinv_BxHxMxM, b_BxHxMxS = self._factors(q, k, segments)
    bv_BxHxMxD = jnp.einsum("bhms,bshd->bhmd", b_BxHxMxS, v.astype(jnp.float32))
    zbv_BxHxMxD = jnp.einsum("bhmn,bhnd->bhmd", a_pinv_BxHxMxM, bv_BxHxMxD)
    out = jnp.einsum("bhlm,bhmd->blhd", f_BxHxLxM, zbv_BxHxMxD)
    return zero_padding(out.astype(v.dtype), segments)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    """W = F A⁺ B (padded key columns and padded query rows zero): fp32 BxHxLxS."""
    check_call("nystromformer", segments, causal)
    f_BxHxLxM, a_pinv_BxHxMxM, b_BxHxMxS = self._factors(q, k, segments)
    fz_BxHxLxM = jnp.einsum("bhlm,bhmn->bhln", f_BxHxLxM, a_pinv_BxHxMxM, precision=_HIGHEST)
    w_BxHxLxS = jnp.einsum("bhlm,bhms->bhls", fz_BxHxLxM, b_BxHxMxS, precision=_HIGHEST)
    return jnp.where(segments.valid[:, None, :, None], w_BxHxLxS, 0.0)
