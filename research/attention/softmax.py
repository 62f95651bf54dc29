"""Exact softmax attention (Vaswani et al., 2017, "Attention Is All You Need").

Two paths, picked by `implementation` (default None: "materialized" on CPU, `jax.nn.dot_product_attention`'s
own choice elsewhere):
  * `jax.nn.dot_product_attention` ("xla", "cudnn", or None on accelerators): rows with one sequence pass
    sequence lengths (no dense mask, so cuDNN's fused kernel stays usable on GPU); packed rows need a segment
    mask built in-jit.
  * "materialized" (`materialized_attention`): the B×H×L×S scores in that layout, the key mask as a select
    broadcast over queries (a dense mask only when packed or causal), fp32 softmax, and a hand-written VJP that
    keeps only the probabilities. On a 2-core CPU its forward+backward at B4 H4 D64 is ~25% faster than
    `jax.nn.dot_product_attention` with sequence lengths at 512 tokens and ~20% at 2,048 (XLA's version moves
    the score matrix between layouts and builds a B×H×L×S mask select in both directions).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.attention import check_call, register
from research.attention.masks import Segments, attention_mask, zero_padding

IMPLEMENTATIONS = (None, "materialized", "xla", "cudnn")


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
  if implementation == "materialized" or (implementation is None and jax.default_backend() == "cpu"):
    if segments.max_segments == 1 and not causal:
      mask = segments.valid[:, None, None, :]  # Bx1x1xS: the key mask, broadcast over heads and queries
    else:
      mask = attention_mask(segments, causal)
    return zero_padding(materialized_attention(q_BxLxHxD, k_BxSxHxD, v_BxSxHxD, mask), segments)
  if segments.max_segments == 1:
    lengths_B = segments.lengths()
    out = jax.nn.dot_product_attention(
      q_BxLxHxD,
      k_BxSxHxD,
      v_BxSxHxD,
      is_causal=causal,
      query_seq_lengths=lengths_B,
      key_value_seq_lengths=lengths_B,
      implementation=implementation,
    )
  else:
    out = jax.nn.dot_product_attention(
      q_BxLxHxD,
      k_BxSxHxD,
      v_BxSxHxD,
      mask=attention_mask(segments, causal),
      implementation=implementation,
    )
  return zero_padding(out, segments)


def _probabilities(q, k, mask):
  logits_BxHxLxS = jnp.einsum("blhd,bshd->bhls", q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
  logits_BxHxLxS = jnp.where(mask, logits_BxHxLxS, -1e30)  # finite: a row with no valid key stays NaN-free
  e = jnp.exp(logits_BxHxLxS - jnp.max(logits_BxHxLxS, axis=-1, keepdims=True))
  return e / jnp.sum(e, axis=-1, keepdims=True)


@jax.custom_vjp
def materialized_attention(q_BxLxHxD, k_BxSxHxD, v_BxSxHxD, mask) -> jax.Array:
  """softmax(q kᵀ/√D where `mask` (broadcastable to BxHxLxS, bool), else excluded) v; fp32 softmax.

  The VJP keeps q, k, v, the probabilities P and the output O:  dV = Pᵀ dO,  dS = P ⊙ (dO Vᵀ − rowsum(dO ⊙ O)),
  dQ = dS K / √D,  dK = dSᵀ Q / √D. Rows whose keys are all masked (padded queries) get uniform weights; callers
  zero them.
  """
  return _materialized_fwd(q_BxLxHxD, k_BxSxHxD, v_BxSxHxD, mask)[0]


def _materialized_fwd(q, k, v, mask):
  p_BxHxLxS = _probabilities(q, k, mask)
  out = jnp.einsum("bhls,bshd->blhd", p_BxHxLxS.astype(v.dtype), v, preferred_element_type=jnp.float32)
  return out.astype(v.dtype), (q, k, v, p_BxHxLxS, out)


def _materialized_bwd(residuals, dout):
  q, k, v, p, out = residuals
  dout = dout.astype(jnp.float32)
  f32 = functools.partial(jnp.einsum, preferred_element_type=jnp.float32)
  dv = f32("bhls,blhd->bshd", p, dout)
  delta_BxHxLx1 = jnp.einsum("blhd,blhd->bhl", dout, out)[..., None]
  ds = p * (f32("blhd,bshd->bhls", dout, v) - delta_BxHxLx1) * q.shape[-1] ** -0.5
  dq, dk = f32("bhls,bshd->blhd", ds, k), f32("bhls,blhd->bshd", ds, q)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


materialized_attention.defvjp(_materialized_fwd, _materialized_bwd)


def softmax_weights(q_BxLxHxD, k_BxSxHxD, segments: Segments, *, causal: bool) -> jax.Array:
  """Materialized fp32 attention weights BxHxLxS (zero rows at padded queries)."""
  scale = q_BxLxHxD.shape[-1] ** -0.5
  logits_BxHxLxS = (
    jnp.einsum(
      "blhd,bshd->bhls",
      q_BxLxHxD.astype(jnp.float32),
      k_BxSxHxD.astype(jnp.float32),
      precision=jax.lax.Precision.HIGHEST,
    )
    * scale
  )
  mask_Bx1xLxS = attention_mask(segments, causal)
  weights = jax.nn.softmax(jnp.where(mask_Bx1xLxS, logits_BxHxLxS, -jnp.inf), axis=-1, where=mask_Bx1xLxS)
  return jnp.where(mask_Bx1xLxS, weights, 0.0)


@register(
  "softmax",
  supports_causal=True,
  supports_packing=True,
  length_invariant=True,
  positions=("learned", "rope"),
  complexity="O(N^2 d)",
  state_size=lambda L, H, D: 4 * H * L * L,  # the materialized LxS score matrix (XLA path)
  paper="Vaswani et al. 2017, arXiv:1706.03762",
)
class SoftmaxAttention(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    implementation: str | None = None  # None: 'materialized' on CPU, else dot_product_attention's default

    def __post_init__(self):
      if self.implementation not in IMPLEMENTATIONS:
        raise ValueError(
          f"softmax implementation {self.implementation!r}; expected one of {', '.join(map(repr, IMPLEMENTATIONS))}"
        )

  cfg: Config = Config()

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("softmax", segments, causal)
    return softmax_attention(q, k, v, segments, causal=causal, implementation=self.cfg.implementation)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    return softmax_weights(q, k, segments, causal=causal)
