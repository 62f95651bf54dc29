"""Based: Taylor linear attention + optional exact local window (Arora et al. 2024, "Simple linear attention language
models balance the recall-throughput tradeoff", arXiv:2402.18668).

Queries and keys are projected per head to a small dimension d' (`feature_dim`, 16 by default) by learned
projections P_q, P_k (HxDxd', one per head; `shared_projection=True` uses P_q for keys too) and scaled:

    q̃ = P_qᵀ q / d'^{1/4},   k̃ = P_kᵀ k / d'^{1/4},   s = q̃·k̃ = (P_qᵀ q)·(P_kᵀ k) / √d'

The 2nd-order Taylor feature map of exp,

    φ(x) = [1, x, vec(x ⊗ x) / √2]                    F = 1 + d' + d'²

gives φ(q̃)·φ(k̃) = τ(s) = 1 + s + s²/2 ≈ exp(s). Since τ(s) = ((s + 1)² + 1)/2 ≥ 1/2 for every s, the normaliser of

    out_i = Σ_j τ(s_ij) v_j / (Σ_j τ(s_ij) + eps)          (j allowed: same segment, j ≤ i when causal)

is at least (number of allowed keys)/2 ≥ 1/2 at every valid query: bounded away from zero.

Sliding window (`window` = w > 0; 0 = off). Based pairs the global Taylor attention with exact softmax attention
over a local window; here both share one normaliser. For query i let A(i) be its allowed keys and
W(i) = {j ∈ A(i) : |i − j| < w} (so i − w < j ≤ i when causal). The window uses the exact exp of the SAME score s
that τ approximates, the Taylor kernel covers the remaining keys, and m_i = max(0, max_{j∈W(i)} s_ij) (a stop-gradient
stabiliser) keeps exp finite:

    a_ij = exp(s_ij − m_i)          j ∈ W(i)
    a_ij = exp(−m_i) τ(s_ij)        j ∈ A(i) \\ W(i)
    out_i = Σ_j a_ij v_j / (Σ_j a_ij + eps)

(`implied_weights` materialises exactly a_ij / (Σ_j a_ij + eps)). The denominator is ≥ 1/2 whenever some window
score is ≥ 0 or some allowed key lies outside the window; otherwise (the whole segment inside the window, all its
scores negative) it is Σ_j exp(s_ij) > 0, as in softmax without max-subtraction. m_i is clamped at 0 so that
exp(−m_i) τ can never overflow. Fast path: the Taylor core over all of A(i)
(`linear.linear_attention`, any causal form) plus a per-query correction Σ_{j∈W(i)} c_ij [v_j, 1] with
c_ij = exp(s_ij − m_i) − exp(−m_i) τ(s_ij), gathered over the 2w−1 (w when causal) neighbours, O(N w (d' + D)).
The correction enters the core as D + 1 extra query features [c·v, Σc] that meet a constant identity block in the
core's initial state (kv0 = [0; I_D; 0], z0 = [0; 0; 1]), so the core's own normalisation divides the combined sums.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.attention import check_call, register
from research.attention.linear import check_causal_options, linear_attention, segment_features
from research.attention.masks import Segments, attention_mask, zero_padding


def taylor_features(x_BxLxHxF: jax.Array) -> jax.Array:
  """φ(x) = [1, x, vec(x ⊗ x)/√2]: fp32 BxLxHx(1 + d' + d'²)."""
  x = x_BxLxHxF.astype(jnp.float32)
  outer = (x[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], -1) * (0.5**0.5)
  return jnp.concatenate([jnp.ones_like(x[..., :1]), x, outer], axis=-1)


def taylor_kernel(s: jax.Array) -> jax.Array:
  """τ(s) = 1 + s + s²/2 = φ(q̃)·φ(k̃) for s = q̃·k̃."""
  return 1.0 + s + 0.5 * s * s


def feature_size(feature_dim: int) -> int:
  return 1 + feature_dim + feature_dim * feature_dim


class HeadProjection(nn.Module):
  """x ↦ Pᵀx / d'^{1/4} per head; P is HxDxd' (LeCun-normal over D), no bias."""

  feature_dim: int

  @nn.compact
  def __call__(self, x_BxLxHxD: jax.Array) -> jax.Array:
    _, _, h, d = x_BxLxHxD.shape
    init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
    p_HxDxF = self.param("kernel", nn.with_logical_partitioning(init, ("heads", "kv", None)), (h, d, self.feature_dim))
    x_BxLxHxF = jnp.einsum("blhd,hdf->blhf", x_BxLxHxD.astype(jnp.float32), p_HxDxF.astype(jnp.float32))
    return x_BxLxHxF * self.feature_dim**-0.25


def _window_offsets(window: int, causal: bool) -> list[int]:
  return list(range(-(window - 1), 1 if causal else window))


def _neighbours(x_BxLx___: jax.Array, offsets: list[int], fill=0) -> jax.Array:
  """Stack x[:, i + o] for o in offsets on a new axis 2 (out-of-row neighbours are `fill`)."""
  lo, hi = max(0, -min(offsets)), max(0, max(offsets))
  length = x_BxLx___.shape[1]
  pad = [(0, 0), (lo, hi)] + [(0, 0)] * (x_BxLx___.ndim - 2)
  x_pad = jnp.pad(x_BxLx___, pad, constant_values=fill)
  return jnp.stack([x_pad[:, lo + o : lo + o + length] for o in offsets], axis=2)


def window_correction(qt_BxLxHxF, kt_BxSxHxF, v_BxSxHxD, segments: Segments, *, window: int, causal: bool):
  """Per query: m_i and Σ_{j∈W(i)} c_ij [v_j, 1] with c_ij = exp(s_ij − m_i) − exp(−m_i) τ(s_ij).

  Returns (m_BxLxH, cv_BxLxHxD, c_BxLxH), all fp32; zero at padded queries.
  """
  offsets = _window_offsets(window, causal)
  ids_BxL = segments.segment_ids
  ids_BxLxW = _neighbours(ids_BxL, offsets)
  valid_BxLxW = (ids_BxLxW == ids_BxL[:, :, None]) & (ids_BxL[:, :, None] > 0)
  kt_BxLxWxHxF = _neighbours(kt_BxSxHxF.astype(jnp.float32), offsets)
  v_BxLxWxHxD = _neighbours(v_BxSxHxD.astype(jnp.float32), offsets)
  s_BxLxHxW = jnp.einsum("blhf,blwhf->blhw", qt_BxLxHxF.astype(jnp.float32), kt_BxLxWxHxF)
  valid_BxLx1xW = valid_BxLxW[:, :, None, :]
  s_BxLxHxW = jnp.where(valid_BxLx1xW, s_BxLxHxW, 0.0)  # finite everywhere: no inf/nan in masked gradients
  m_BxLxH = jax.lax.stop_gradient(jnp.maximum(jnp.max(s_BxLxHxW, axis=-1), 0.0))
  m_BxLxHx1 = m_BxLxH[..., None]
  c_BxLxHxW = jnp.exp(s_BxLxHxW - m_BxLxHx1) - jnp.exp(-m_BxLxHx1) * taylor_kernel(s_BxLxHxW)
  c_BxLxHxW = jnp.where(valid_BxLx1xW, c_BxLxHxW, 0.0)
  cv_BxLxHxD = jnp.einsum("blhw,blwhd->blhd", c_BxLxHxW, v_BxLxWxHxD)
  return m_BxLxH, cv_BxLxHxD, jnp.sum(c_BxLxHxW, axis=-1)


def with_window(phi_q_BxLxHxF, phi_k_BxLxHxF, v_BxLxHxD, m_BxLxH, cv_BxLxHxD, c_BxLxH):
  """(φ_q, φ_k, initial state) of the linear core that adds the window correction: queries gain the corrected
  window's numerator cv and denominator c as extra features read through a constant identity block of the state
  (keys get zeros there), and the Taylor part is rescaled by e^{−m}."""
  b, length, h, d = v_BxLxHxD.shape
  f = phi_q_BxLxHxF.shape[-1]
  phi_q = jnp.concatenate([phi_q_BxLxHxF * jnp.exp(-m_BxLxH)[..., None], cv_BxLxHxD, c_BxLxH[..., None]], axis=-1)
  phi_k = jnp.concatenate([phi_k_BxLxHxF, jnp.zeros((b, length, h, d + 1), phi_k_BxLxHxF.dtype)], axis=-1)
  kv0_FxD = jnp.zeros((f + d + 1, d), jnp.float32).at[f : f + d].set(jnp.eye(d, dtype=jnp.float32))
  z0_F = jnp.zeros((f + d + 1,), jnp.float32).at[f + d].set(1.0)
  return phi_q, phi_k, (jnp.broadcast_to(kv0_FxD, (b, h, f + d + 1, d)), jnp.broadcast_to(z0_F, (b, h, f + d + 1)))


@register(
  "based",
  supports_causal=True,
  supports_packing=True,
  length_invariant=True,
  positions=("learned", "rope"),
  complexity="O(N d'^2 d)",
  # (kv, z) per head with the default d' = 16: F = 1 + 16 + 256 = 273 (a window w adds a 2·w·D KV cache per head)
  state_size=lambda L, H, D: 4 * H * feature_size(16) * (D + 1),
  paper="Arora et al. 2024, arXiv:2402.18668",
)
class BasedAttention(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    feature_dim: int = 16  # d': projected q/k dimension; F = 1 + d' + d'²
    shared_projection: bool = False  # True: keys use the query projection
    window: int = 0  # exact exp-attention over keys with |i − j| < window (0 = off)
    eps: float = 1e-6
    causal_form: str = "chunked"
    chunk_size: int = 64

    def __post_init__(self):
      if self.feature_dim <= 0:
        raise ValueError(f"based feature_dim must be positive, got {self.feature_dim}")
      if self.window < 0:
        raise ValueError(f"based window must be >= 0 (0 = off), got {self.window}")
      check_causal_options("based", self.causal_form, self.chunk_size)
      if not self.eps > 0:
        raise ValueError(f"based eps must be > 0, got {self.eps}")

  cfg: Config = Config()

  def setup(self):
    if self.cfg.shared_projection:
      self.qk_proj = HeadProjection(self.cfg.feature_dim)
    else:
      self.q_proj = HeadProjection(self.cfg.feature_dim)
      self.k_proj = HeadProjection(self.cfg.feature_dim)

  def project(self, q_BxLxHxD, k_BxSxHxD):
    """q̃, k̃: fp32 BxLxHxd', scaled by d'^{-1/4}."""
    if self.cfg.shared_projection:
      return self.qk_proj(q_BxLxHxD), self.qk_proj(k_BxSxHxD)
    return self.q_proj(q_BxLxHxD), self.k_proj(k_BxSxHxD)

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("based", segments, causal)
    qt, kt = self.project(q, k)
    phi_q = segment_features(taylor_features(qt), segments)
    phi_k = segment_features(taylor_features(kt), segments)
    initial_state = None
    if self.cfg.window:
      correction = window_correction(qt, kt, v, segments, window=self.cfg.window, causal=causal)
      phi_q, phi_k, initial_state = with_window(phi_q, phi_k, v, *correction)
    out, _ = linear_attention(
      phi_q,
      phi_k,
      v,
      causal=causal,
      eps=self.cfg.eps,
      form=self.cfg.causal_form,
      chunk_size=self.cfg.chunk_size,
      initial_state=initial_state,
    )
    return zero_padding(out.astype(v.dtype), segments)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    """a_ij / (Σ_j a_ij + eps) with a_ij as in the module docstring: fp32 BxHxLxS."""
    qt, kt = self.project(q, k)
    s_BxHxLxS = jnp.einsum("blhf,bshf->bhls", qt, kt, precision=jax.lax.Precision.HIGHEST)
    allowed_Bx1xLxS = attention_mask(segments, causal)
    a_BxHxLxS = jnp.where(allowed_Bx1xLxS, taylor_kernel(s_BxHxLxS), 0.0)
    if self.cfg.window:
      length, keys = s_BxHxLxS.shape[-2:]
      band_LxS = jnp.abs(jnp.arange(length)[:, None] - jnp.arange(keys)[None, :]) < self.cfg.window
      win_Bx1xLxS = allowed_Bx1xLxS & band_LxS
      s_win = jnp.where(win_Bx1xLxS, s_BxHxLxS, 0.0)
      m_BxHxLx1 = jax.lax.stop_gradient(jnp.maximum(jnp.max(s_win, axis=-1, keepdims=True), 0.0))
      a_BxHxLxS = jnp.where(win_Bx1xLxS, jnp.exp(s_win - m_BxHxLx1), jnp.exp(-m_BxHxLx1) * a_BxHxLxS)
    return a_BxHxLxS / (jnp.sum(a_BxHxLxS, axis=-1, keepdims=True) + self.cfg.eps)
