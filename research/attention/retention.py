"""Multi-scale retention (Sun et al., 2023, "Retentive Network: A Successor to Transformer for Large Language
Models", arXiv:2307.08621).

Per head h, with a fixed decay γ_h (Sec. 2.2, "γ = 1 − 2^(−5−arange(0, h))"):

    parallel   (Eq. 5):  Retention(X) = (Q Kᵀ ⊙ D) V,   D_nm = γ^(n−m) for n ≥ m, else 0
    recurrent  (Eq. 6):  S_n = γ S_{n−1} + K_nᵀ V_n,     Retention(X_n) = Q_n S_n
    chunkwise  (Eq. 7):  R_i = K_[i]ᵀ (V_[i] ⊙ ζ) + γ^B R_{i−1},
                         Retention(X_[i]) = (Q_[i] K_[i]ᵀ ⊙ D) V_[i] + (Q_[i] R_{i−1}) ⊙ ξ
    output     (Eq. 8):  Y = GroupNorm_h(Concat(head_1, ..., head_h))          -> `finalize`

with the paper's score normalisation (Sec. 2.2): Q Kᵀ → Q Kᵀ / √d and D̃_nm = D_nm / √(Σ_i D_ni)
(`normalize_decay`, on by default). Bidirectional (encoder) mode uses D_nm = γ^|n−m|: a forward causal pass plus
a backward pass over the reversed sequence that excludes the diagonal, so m = n is counted once; D̃ then divides
by √(Σ_i γ^|n−i|) over the segment.

Not here, by design of the shared mixer signature: the xPos rotation Θ (the encoder applies RoPE to q and k when
`positions="rope"`), the swish gate swish(X W_G) and W_O (they need X; the encoder's output projection
follows), and the paper's data-dependent R̃_nm = R_nm / max(|Σ_i R_ni|, 1), a per-row scale that the
scale-invariant GroupNorm removes anyway.

Packing: the decay is reset (log γ → −inf) at each segment's first token (its last token for the backward
pass), so the state stays D×D per head; padding contributes nothing. See `research.attention.decay`.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.attention import check_call, register
from research.attention.decay import (
  HeadNorm,
  decay_attention,
  mask_padding,
  segment_log_decay,
  segment_positions,
)
from research.attention.linear import check_causal_options
from research.attention.masks import Segments, attention_mask, zero_padding


def log_gammas(num_heads: int) -> jax.Array:
  """log γ_h = log(1 − 2^(−5−h)), h = 0..H−1, computed in float64 then rounded (γ itself rounds to 1 for h ≥ 19)."""
  return jnp.asarray(np.log1p(-(2.0 ** (-5.0 - np.arange(num_heads)))), jnp.float32)


def decay_row_scale(segments: Segments, num_heads: int, causal: bool) -> jax.Array:
  """D̃'s row factor 1/√(Σ_m D_nm), BxLxH, in closed form from each token's position and segment length:

  causal Σ_{m≤n} γ^(n−m) = (1 − γ^(p+1)) / (1 − γ);  bidirectional adds (1 − γ^(len−p)) / (1 − γ) − 1.
  """
  position_BxL, length_BxL = segment_positions(segments)
  lg_11H = log_gammas(num_heads)[None, None, :]
  geometric = lambda n_BxL: jnp.expm1(n_BxL[..., None].astype(jnp.float32) * lg_11H) / jnp.expm1(lg_11H)
  total_BxLxH = geometric(position_BxL + 1)
  if not causal:
    total_BxLxH = total_BxLxH + geometric(length_BxL - position_BxL) - 1.0
  return jax.lax.rsqrt(jnp.where(segments.valid[..., None], total_BxLxH, 1.0))


@register(
  "retention",
  supports_causal=True,
  supports_packing=True,
  length_invariant=True,
  positions=("learned", "rope"),
  complexity="O(N d^2)",
  state_size=lambda L, H, D: 4 * H * D * D,  # S_t per head; packing resets it, no per-segment blocks
  paper="Sun et al. 2023, arXiv:2307.08621",
)
class Retention(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    causal_form: str = "chunked"  # parallel | recurrent | chunked (also used by each direction when bidirectional)
    chunk_size: int = 64
    normalize_decay: bool = True  # the paper's D̃ (rows of D divided by √ of their sum)
    norm_eps: float = 1e-5  # GroupNorm epsilon

    def __post_init__(self):
      check_causal_options("retention", self.causal_form, self.chunk_size)
      if not isinstance(self.normalize_decay, bool):
        raise ValueError(f"retention normalize_decay must be True or False, got {self.normalize_decay!r}")
      if not self.norm_eps > 0:
        raise ValueError(f"retention norm_eps must be > 0, got {self.norm_eps}")

  cfg: Config = Config()

  def setup(self):
    self.norm = HeadNorm(centered=True, eps=self.cfg.norm_eps)

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    return self.finalize(self.retain(q, k, v, segments, causal), segments).astype(v.dtype)

  def retain(self, q, k, v, segments: Segments, causal: bool = False) -> jax.Array:
    """The retention output before the GroupNorm, fp32 BxLxHxD (padded queries: zero)."""
    check_call("retention", segments, causal)
    b, length, h, d = q.shape
    g_BxLxHx1 = jnp.broadcast_to(log_gammas(h)[:, None], (b, length, h, 1))
    out, _ = decay_attention(
      mask_padding(q.astype(jnp.float32), segments) * d**-0.5,
      mask_padding(k.astype(jnp.float32), segments),
      mask_padding(v.astype(jnp.float32), segments),
      segment_log_decay(g_BxLxHx1, segments),
      g_backward_BxLxHxG=segment_log_decay(g_BxLxHx1, segments, reverse=True),
      causal=causal,
      form=self.cfg.causal_form,
      chunk_size=self.cfg.chunk_size,
      sub_chunk_size=1,
    )
    if self.cfg.normalize_decay:
      out = out * decay_row_scale(segments, h, causal)[..., None]
    return out

  def finalize(self, out_BxLxHxD: jax.Array, segments: Segments) -> jax.Array:
    """The paper's per-head GroupNorm (fp32), exact zeros at padding."""
    return zero_padding(self.norm(out_BxLxHxD), segments)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    """fp32 BxHxLxL: (q_n·k_m / √d) D̃_nm with D_nm = γ_h^|n−m| on allowed same-segment pairs, built directly."""
    _, length, h, d = q.shape
    idx_L = jnp.arange(length)
    distance_LxL = jnp.abs(idx_L[:, None] - idx_L[None, :]).astype(jnp.float32)
    decay_HxLxL = jnp.exp(distance_LxL * log_gammas(h)[:, None, None])
    decay_BxHxLxL = jnp.where(attention_mask(segments, causal), decay_HxLxL, 0.0)
    if self.cfg.normalize_decay:
      row_BxHxLx1 = jnp.sum(decay_BxHxLxL, axis=-1, keepdims=True)
      decay_BxHxLxL = decay_BxHxLxL * jax.lax.rsqrt(jnp.where(row_BxHxLx1 > 0, row_BxHxLx1, 1.0))
    scores_BxHxLxL = jnp.einsum(
      "blhd,bshd->bhls", q.astype(jnp.float32), k.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST
    )
    return scores_BxHxLxL * d**-0.5 * decay_BxHxLxL
