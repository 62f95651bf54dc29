"""Hedgehog linear attention (Zhang et al. 2024, "The Hedgehog & the Porcupine: Expressive Linear Attentions with
Softmax Mimicry", arXiv:2402.04347).

A learned feature map per head, the paper's softmax-normalised Hedgehog map:

    u = W x + b,    φ(x) = [softmax(u), softmax(−u)]          W ∈ R^{F'×D}, b ∈ R^{F'}, F = 2F'

(softmax over the feature axis), inside normalised linear attention (`linear.linear_attention`):

    out_i = φ_q(q_i) Σ_j φ_k(k_j) v_jᵀ / (φ_q(q_i) Σ_j φ_k(k_j) + eps)        (j ≤ i when causal; same segment)

W starts as the identity and b as 0 (so F' = D by default and, at init, φ(x) = [softmax(x), softmax(−x)]).
Queries and keys get separate maps, as in the paper; `shared_feature_map=True` ties them. Every entry of φ is
positive, so the denominator is positive (though not bounded away from zero by a constant).

The maps are trained to mimic softmax attention: `attention_distillation_loss` is the paper's cross-entropy between
softmax attention rows (targets) and the rows of the linear attention's implied weights (predictions). Padding and
packing are exact through `segment_features`; all three causal forms of the linear core are available.
"""

from __future__ import annotations

import dataclasses

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


def _identity_init(key, shape_HxDxF, dtype=jnp.float32):
  """W = I per head (a rectangular identity when F' != D)."""
  del key
  h, d, f = shape_HxDxF
  return jnp.broadcast_to(jnp.eye(d, f, dtype=dtype), (h, d, f))


def hedgehog_features(x_BxLxHxD: jax.Array, w_HxDxF: jax.Array, b_HxF: jax.Array) -> jax.Array:
  """φ(x) = [softmax(Wx + b), softmax(−(Wx + b))] over the feature axis: fp32 BxLxHx(2F')."""
  u_BxLxHxF = jnp.einsum("blhd,hdf->blhf", x_BxLxHxD.astype(jnp.float32), w_HxDxF.astype(jnp.float32))
  u_BxLxHxF = u_BxLxHxF + b_HxF.astype(jnp.float32)
  return jnp.concatenate([jax.nn.softmax(u_BxLxHxF, axis=-1), jax.nn.softmax(-u_BxLxHxF, axis=-1)], axis=-1)


class HedgehogFeatureMap(nn.Module):
  """One learned map per head: kernel HxDxF' (identity init), bias HxF' (zero init)."""

  feature_dim: int = 0  # F' (half of the feature dimension); 0 = D

  @nn.compact
  def __call__(self, x_BxLxHxD: jax.Array) -> jax.Array:
    _, _, h, d = x_BxLxHxD.shape
    f = self.feature_dim or d
    w_HxDxF = self.param("kernel", nn.with_logical_partitioning(_identity_init, ("heads", "kv", None)), (h, d, f))
    b_HxF = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("heads", None)), (h, f))
    return hedgehog_features(x_BxLxHxD, w_HxDxF, b_HxF)


def attention_distillation_loss(
  softmax_weights_BxHxLxS: jax.Array,
  implied_weights_BxHxLxS: jax.Array,
  valid_or_mask: Segments | jax.Array,
  *,
  eps: float = 1e-6,
) -> jax.Array:
  """Cross-entropy of the implied weights (predictions) against softmax attention rows (targets).

      loss = −(1 / #valid rows) Σ_{valid (b, h, i)} Σ_j t_bhij · log(max(p_bhij, eps))

  Rows are (batch, head, query) triples; only non-padded queries count. `valid_or_mask` is a `Segments`, a BxL
  boolean of valid queries, or an attention mask broadcastable to BxHxLxS (e.g. `masks.attention_mask`, then a row
  is valid if it may attend anything, and entries outside the mask are ignored). Zero targets contribute nothing.
  Returns an fp32 scalar (0 if no row is valid).
  """
  t = softmax_weights_BxHxLxS.astype(jnp.float32)
  p = implied_weights_BxHxLxS.astype(jnp.float32)
  if isinstance(valid_or_mask, Segments):
    valid_or_mask = valid_or_mask.valid
  mask = jnp.asarray(valid_or_mask, dtype=bool)
  if mask.ndim == 2:  # BxL valid queries
    entries_BxHxLxS = jnp.broadcast_to(mask[:, None, :, None], t.shape)
  elif mask.ndim == 4:  # attention mask
    entries_BxHxLxS = jnp.broadcast_to(mask, t.shape)
  else:
    raise ValueError(f"valid_or_mask has shape {mask.shape}; expected BxL valid queries or a BxHxLxS mask")
  rows_BxHxL = jnp.any(entries_BxHxLxS, axis=-1)
  keep = entries_BxHxLxS & (t > 0)
  ce_BxHxLxS = jnp.where(keep, -t * jnp.log(jnp.maximum(jnp.where(keep, p, 1.0), eps)), 0.0)
  return jnp.sum(ce_BxHxLxS) / jnp.maximum(jnp.sum(rows_BxHxL), 1).astype(jnp.float32)


@register(
  "hedgehog",
  supports_causal=True,
  supports_packing=True,
  length_invariant=True,
  positions=("learned", "rope"),
  complexity="O(N d^2)",
  state_size=lambda L, H, D: 4 * H * (2 * D * D + 2 * D),  # (kv, z) per head with F = 2D (default F' = D)
  paper="Zhang et al. 2024, arXiv:2402.04347",
)
class HedgehogAttention(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    feature_dim: int = 0  # F' per half of φ; 0 = the head dim D (identity init is then exact)
    shared_feature_map: bool = False  # True: one map for q and k (the paper trains separate ones)
    eps: float = 1e-6
    causal_form: str = "chunked"
    chunk_size: int = 64

    def __post_init__(self):
      if self.feature_dim < 0:
        raise ValueError(f"hedgehog feature_dim must be >= 0 (0 = head dim), got {self.feature_dim}")
      check_causal_options("hedgehog", self.causal_form, self.chunk_size)
      if not self.eps > 0:
        raise ValueError(f"hedgehog eps must be > 0, got {self.eps}")

  cfg: Config = Config()

  def setup(self):
    if self.cfg.shared_feature_map:
      self.qk_map = HedgehogFeatureMap(self.cfg.feature_dim)
    else:
      self.q_map = HedgehogFeatureMap(self.cfg.feature_dim)
      self.k_map = HedgehogFeatureMap(self.cfg.feature_dim)

  def feature_maps(self, q_BxLxHxD, k_BxSxHxD):
    """Unexpanded φ_q(q), φ_k(k): fp32 BxLxHxF."""
    if self.cfg.shared_feature_map:
      return self.qk_map(q_BxLxHxD), self.qk_map(k_BxSxHxD)
    return self.q_map(q_BxLxHxD), self.k_map(k_BxSxHxD)

  def features(self, q, k, segments: Segments):
    phi_q_BxLxHxF, phi_k_BxSxHxF = self.feature_maps(q, k)
    return segment_features(phi_q_BxLxHxF, segments), segment_features(phi_k_BxSxHxF, segments)

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("hedgehog", segments, causal)
    phi_q, phi_k = self.features(q, k, segments)
    out, _ = linear_attention(
      phi_q, phi_k, v, causal=causal, eps=self.cfg.eps, form=self.cfg.causal_form, chunk_size=self.cfg.chunk_size
    )
    return zero_padding(out.astype(v.dtype), segments)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    phi_q, phi_k = self.features(q, k, segments)
    return linear_weights(phi_q, phi_k, causal=causal, eps=self.cfg.eps)
