"""Exact softmax attention (Vaswani et al., 2017, "Attention Is All You Need").

The fast path is `jax.nn.dot_product_attention`: rows with one sequence pass sequence lengths (no dense
mask, so cuDNN's fused kernel stays usable on GPU); packed rows need a segment mask built in-jit.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.attention import check_call, register
from research.attention.masks import Segments, attention_mask, zero_padding


def softmax_attention(
  q_BxLxHxD: jax.Array,
  k_BxSxHxD: jax.Array,
  v_BxSxHxD: jax.Array,
  segments: Segments,
  *,
  causal: bool,
  implementation: str | None = None,
) -> jax.Array:
  """softmax(q kᵀ / sqrt(D) + mask) v, honouring padding and packing."""
  if segments.max_segments == 1:
    lengths_B = segments.lengths()
    out = jax.nn.dot_product_attention(
      q_BxLxHxD, k_BxSxHxD, v_BxSxHxD, is_causal=causal,
      query_seq_lengths=lengths_B, key_value_seq_lengths=lengths_B, implementation=implementation,
    )
  else:
    out = jax.nn.dot_product_attention(
      q_BxLxHxD, k_BxSxHxD, v_BxSxHxD, mask=attention_mask(segments, causal), implementation=implementation,
    )
  return zero_padding(out, segments)


def softmax_weights(q_BxLxHxD, k_BxSxHxD, segments: Segments, *, causal: bool) -> jax.Array:
  """Materialized fp32 attention weights BxHxLxS (zero rows at padded queries)."""
  scale = q_BxLxHxD.shape[-1] ** -0.5
  logits_BxHxLxS = jnp.einsum(
    "blhd,bshd->bhls", q_BxLxHxD.astype(jnp.float32), k_BxSxHxD.astype(jnp.float32),
    precision=jax.lax.Precision.HIGHEST,
  ) * scale
  mask_Bx1xLxS = attention_mask(segments, causal)
  weights = jax.nn.softmax(jnp.where(mask_Bx1xLxS, logits_BxHxLxS, -jnp.inf), axis=-1, where=mask_Bx1xLxS)
  return jnp.where(mask_Bx1xLxS, weights, 0.0)


@register(
  "softmax", supports_causal=True, supports_packing=True, length_invariant=True,
  positions=("learned", "rope"), complexity="O(N^2 d)",
  state_size=lambda L, H, D: 4 * H * L * L,  # the materialized LxS score matrix (XLA path)
  paper="Vaswani et al. 2017, arXiv:1706.03762",
)
class SoftmaxAttention(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    implementation: str | None = None  # None: backend default; 'xla' or 'cudnn'

    def __post_init__(self):
      if self.implementation not in (None, "xla", "cudnn"):
        raise ValueError(f"softmax implementation {self.implementation!r}; expected None, 'xla' or 'cudnn'")

  cfg: Config = Config()

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("softmax", segments, causal)
    return softmax_attention(q, k, v, segments, causal=causal, implementation=self.cfg.implementation)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    return softmax_weights(q, k, segments, causal=causal)
