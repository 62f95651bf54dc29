"""cosFormer (Qin et al., 2022, "cosFormer: Rethinking Softmax in Attention", arXiv:2202.08791).

ReLU features with a cos-based re-weighting that favours nearby tokens (Eq. 9-11 of the paper):

    s(q_i, k_j) = relu(q_i)·relu(k_j) · cos(π (i − j) / 2M)
                = φ(q_i)·φ(k_j),   φ(x_i) = [relu(x_i) cos(π i / 2M), relu(x_i) sin(π i / 2M)]   (F = 2D)
    out_i = Σ_j s(q_i, k_j) v_j / (Σ_j s(q_i, k_j) + eps)                                    (j ≤ i when causal)

i is the position INSIDE the token's segment (`segments.positions`). Bidirectional: M is the length of the
token's own segment (valid tokens only, so padding and the other packed segments change nothing, and
|i − j| ≤ M − 1 keeps every cos weight positive). Causal: M is the fixed `causal_m`, because a per-sequence M
would leak the sequence length (the future) into early tokens; a row longer than causal_m is a trace-time
ValueError (positions ≥ M would flip the sign of the cos weight). Every term of φ(q_i)·φ(k_j) is ≥ 0 (angles in
[0, π/2)), so the denominator has no cancellation. Packing is exact through `segment_features`.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.attention import check_call, register
from research.attention.linear import (
  check_causal_options,
  linear_attention,
  linear_weights,
  segment_features,
)
from research.attention.masks import Segments, zero_padding


def segment_lengths(segments: Segments) -> jax.Array:
  """BxL int32: the number of valid tokens in each token's segment (0 at padding)."""
  if segments.max_segments == 1:
    return jnp.where(segments.valid, segments.lengths()[:, None], 0)
  onehot_BxLxG = segments.one_hot(jnp.int32)
  return jnp.einsum("blg,bg->bl", onehot_BxLxG, jnp.sum(onehot_BxLxG, axis=1))


def cos_reweighting(segments: Segments, *, causal: bool, causal_m: int) -> jax.Array:
  """BxL angles π i / 2M (fp32): i = position in segment, M = its segment's length, or causal_m if causal."""
  if causal:
    m_BxL = jnp.full(segments.segment_ids.shape, float(causal_m), jnp.float32)
  else:
    m_BxL = jnp.maximum(segment_lengths(segments), 1).astype(jnp.float32)
  return (math.pi / 2) * segments.positions.astype(jnp.float32) / m_BxL


def cosformer_features(q_BxLxHxD, k_BxLxHxD, segments: Segments, *, causal: bool, causal_m: int):
  """Segment-expanded φ(q), φ(k): BxLxHx(G·2D) fp32."""
  angle_BxLx1x1 = cos_reweighting(segments, causal=causal, causal_m=causal_m)[:, :, None, None]

  def phi(x_BxLxHxD):
    r = jax.nn.relu(x_BxLxHxD.astype(jnp.float32))
    return segment_features(jnp.concatenate([r * jnp.cos(angle_BxLx1x1), r * jnp.sin(angle_BxLx1x1)], -1), segments)

  return phi(q_BxLxHxD), phi(k_BxLxHxD)


@register(
  "cosformer",
  supports_causal=True,
  supports_packing=True,
  length_invariant=True,
  positions=("learned", "rope"),
  complexity="O(N d^2)",
  state_size=lambda L, H, D: 4 * H * (2 * D * D + 2 * D),  # (kv, z) per head, F = 2D
  paper="Qin et al. 2022, arXiv:2202.08791",
)
class CosFormerAttention(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    eps: float = 1e-6
    causal_m: int = 512  # causal mode only: the fixed M; rows must not be longer
    causal_form: str = "chunked"
    chunk_size: int = 64

    def __post_init__(self):
      check_causal_options("cosformer", self.causal_form, self.chunk_size)
      if self.causal_m <= 0:
        raise ValueError(f"cosformer causal_m must be positive, got {self.causal_m}")
      if not self.eps > 0:
        raise ValueError(f"cosformer eps must be > 0, got {self.eps}")

  cfg: Config = Config()

  def features(self, q, k, segments: Segments, causal: bool):
    if causal and q.shape[1] > self.cfg.causal_m:
      raise ValueError(
        f"cosformer causal_m={self.cfg.causal_m} is shorter than the row length {q.shape[1]}: positions must stay "
        f"< causal_m (else cos(π(i−j)/2M) changes sign); raise causal_m to at least {q.shape[1]}"
      )
    return cosformer_features(q, k, segments, causal=causal, causal_m=self.cfg.causal_m)

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("cosformer", segments, causal)
    phi_q, phi_k = self.features(q, k, segments, causal)
    out, _ = linear_attention(
      phi_q, phi_k, v, causal=causal, eps=self.cfg.eps, form=self.cfg.causal_form, chunk_size=self.cfg.chunk_size
    )
    return zero_padding(out.astype(v.dtype), segments)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    phi_q, phi_k = self.features(q, k, segments, causal)
    return linear_weights(phi_q, phi_k, causal=causal, eps=self.cfg.eps)
