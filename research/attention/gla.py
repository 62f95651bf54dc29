"""Gated Linear Attention (Yang et al., 2024, "Gated Linear Attention Transformers with Hardware-Efficient
Training", arXiv:2312.06635).

Data-dependent decay per key dimension (Sec. 4.1):

    S_t = diag(α_t) S_{t−1} + k_tᵀ v_t,      o_t = q_t S_t,      α_t = σ(x_t W_α1 W_α2 + b_α)^(1/τ),  τ = 16

    parallel:  o_i = Σ_{j≤i} Σ_d q_id k_jd (Π_{j<r≤i} α_rd) v_j

with q scaled by 1/√d and a per-head RMSNorm on the output (`finalize`). Bidirectional (encoder) mode adds the
mirrored pass over the reversed sequence without its diagonal, A_ij = Σ_d q_id k_jd Π_{i≤r<j} α_rd for j > i.

Deviations, forced by the shared mixer signature (the mixer receives q, k, v, never x): the gate is a low-rank
projection of the head-concatenated key, α_t = σ(k_t W_α1 W_α2 + b_α)^(1/τ) with W_α1: (H·D)×r, W_α2: r×(H·D)
(r = 16 as in the paper), owned by this module. With `positions="rope"` the encoder has already rotated k, so
the gate also sees the position. The paper's swish output gate needs x and is left to the encoder.

The chunked form (`research.attention.decay`) works in log space relative to the chunk: every decay factor is
exp(Σ_{j<r≤i} log α_r) with the sum taken over the range itself, so each exponent is ≤ 0, it never divides
by a cumulative gate product, and gates as small as 1e-4 over long chunks stay finite. Packing resets the decay
(log α → −inf) at each segment's first token (last token for the backward pass).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.attention import check_call, register
from research.attention.decay import (
  HeadNorm,
  decay_attention,
  gated_weights,
  mask_padding,
  segment_log_decay,
)
from research.attention.linear import check_causal_options
from research.attention.masks import Segments, zero_padding


class LowRankGate(nn.Module):
  """log α_BxLxHxD = log σ(k W_down W_up + b) / τ, in (−∞, 0); computed in fp32 with a stable log-sigmoid."""

  rank: int
  temperature: float

  @nn.compact
  def __call__(self, k_BxLxHxD: jax.Array) -> jax.Array:
    h, d = k_BxLxHxD.shape[-2:]
    init = lambda in_axis, out_axis, axes: nn.with_logical_partitioning(  # noqa: E731
      nn.initializers.lecun_normal(in_axis=in_axis, out_axis=out_axis), axes
    )
    w_down = self.param("down", init((0, 1), 2, ("heads", "kv", None)), (h, d, self.rank))
    w_up = self.param("up", init(0, (1, 2), (None, "heads", "kv")), (self.rank, h, d))
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("heads", "kv")), (h, d))
    low_BxLxR = jnp.einsum("blhd,hdr->blr", k_BxLxHxD.astype(jnp.float32), w_down)
    logits_BxLxHxD = jnp.einsum("blr,rhd->blhd", low_BxLxR, w_up) + bias
    return jax.nn.log_sigmoid(logits_BxLxHxD) / self.temperature


@register(
  "gla",
  supports_causal=True,
  supports_packing=True,
  length_invariant=True,
  positions=("learned", "rope"),
  complexity="O(N d^2)",
  state_size=lambda L, H, D: 4 * H * D * D,  # S_t per head; packing resets it, no per-segment blocks
  paper="Yang et al. 2024, arXiv:2312.06635",
)
class GatedLinearAttention(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    causal_form: str = "chunked"  # parallel | recurrent | chunked (also used by each direction when bidirectional)
    chunk_size: int = 64
    sub_chunk_size: int = 16  # secondary chunking: pairwise per-dimension decays only inside sub-chunks
    gate_rank: int = 16
    gate_temperature: float = 16.0  # τ
    norm_eps: float = 1e-5  # RMSNorm epsilon

    def __post_init__(self):
      check_causal_options("gla", self.causal_form, self.chunk_size)
      for name in ("sub_chunk_size", "gate_rank"):
        if getattr(self, name) <= 0:
          raise ValueError(f"gla {name} must be positive, got {getattr(self, name)}")
      if self.chunk_size % self.sub_chunk_size:
        raise ValueError(f"gla chunk_size={self.chunk_size} must be a multiple of sub_chunk_size={self.sub_chunk_size}")
      for name in ("gate_temperature", "norm_eps"):
        if not getattr(self, name) > 0:
          raise ValueError(f"gla {name} must be > 0, got {getattr(self, name)}")

  cfg: Config = Config()

  def setup(self):
    self.gate = LowRankGate(rank=self.cfg.gate_rank, temperature=self.cfg.gate_temperature)
    self.norm = HeadNorm(centered=False, eps=self.cfg.norm_eps)

  def log_gates(self, k_BxLxHxD: jax.Array) -> jax.Array:
    """log α_t, BxLxHxD fp32, every entry < 0."""
    return self.gate(k_BxLxHxD)

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    return self.finalize(self.attend(q, k, v, segments, causal), segments).astype(v.dtype)

  def attend(self, q, k, v, segments: Segments, causal: bool = False) -> jax.Array:
    """The gated linear attention output before the RMSNorm, fp32 BxLxHxD (padded queries: zero)."""
    check_call("gla", segments, causal)
    g_BxLxHxD = self.log_gates(k)
    out, _ = decay_attention(
      mask_padding(q.astype(jnp.float32), segments) * q.shape[-1] ** -0.5,
      mask_padding(k.astype(jnp.float32), segments),
      mask_padding(v.astype(jnp.float32), segments),
      segment_log_decay(g_BxLxHxD, segments),
      g_backward_BxLxHxG=segment_log_decay(g_BxLxHxD, segments, reverse=True),
      causal=causal,
      form=self.cfg.causal_form,
      chunk_size=self.cfg.chunk_size,
      sub_chunk_size=self.cfg.sub_chunk_size,
    )
    return out

  def finalize(self, out_BxLxHxD: jax.Array, segments: Segments) -> jax.Array:
    """Per-head RMSNorm (fp32), exact zeros at padding."""
    return zero_padding(self.norm(out_BxLxHxD), segments)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    """fp32 BxHxLxL: A_ij = Σ_d (q_id/√d) k_jd Π α_rd over the tokens between (see `decay.gated_weights`)."""
    return gated_weights(q.astype(jnp.float32) * q.shape[-1] ** -0.5, k, self.log_gates(k), segments, causal=causal)
