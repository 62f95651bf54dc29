"""Linformer (Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity", arXiv:2006.04768).

Keys and values are projected along the length axis by learned E, F ∈ R^{k×n} (k = `proj_dim`), per head h:

    out_h = softmax(q_h (E_h k_h)ᵀ / √D) (F_h v_h)                      (k projected keys, no mask inside)

so the exact attention matrix it implies, out = W v, is W_h = softmax(q_h (E_h k_h)ᵀ / √D) F_h  (L×S).

Deviations from / choices beyond the paper:
  * Variable lengths: the paper pads to a fixed n. Here E, F have `max_len` columns and a batch of length
    L ≤ max_len uses their first L columns; padded keys and values are zeroed before the projection, so they
    contribute nothing: E k = Σ_{j < n} E[:, j] k_j for a sequence of n valid tokens. A sequence therefore always
    meets the same columns 0..n-1 whatever padding follows it, so the mixer IS length-invariant in the registry's
    sense (extra padding changes nothing; declared, and tested by the conformance suite). It is still
    position-dependent: token j always meets column j of E and F.
  * Sharing (paper §4): "none" = E_h, F_h per head; "headwise" (default, what the authors' fairseq code does) =
    one E and one F shared by all heads; "kv" = one E = F shared by all heads. The paper's "layerwise" sharing
    (one E for all layers) is not expressible inside one mixer (layers run under nn.scan).
  * Initialisation (the paper does not state one for training): xavier-uniform with gain 1/√2, i.e. variance
    1/(max_len + k), as in the authors' fairseq implementation.
  * Non-causal only (as in the paper); packed rows are rejected (the projection mixes every position of a row).
  * `max_len` defaults to 8192 so the default mixer runs at every length of the memory test; a model should set
    it to its own maximum length (parameters scale as 2·k·max_len per layer).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.attention import check_call, register
from research.attention.masks import Segments, zero_padding

SHARING = ("none", "headwise", "kv")


def projected_keys_values(
  k_BxSxHxD: jax.Array, v_BxSxHxD: jax.Array, e_HxPxS: jax.Array, f_HxPxS: jax.Array, segments: Segments
) -> tuple[jax.Array, jax.Array]:
  """(E k, F v): fp32 BxPxHxD each, padded keys/values zeroed first."""
  valid_BxSx1x1 = segments.valid[:, :, None, None]
  k0 = jnp.where(valid_BxSx1x1, k_BxSxHxD.astype(jnp.float32), 0.0)
  v0 = jnp.where(valid_BxSx1x1, v_BxSxHxD.astype(jnp.float32), 0.0)
  ek_BxPxHxD = jnp.einsum("hps,bshd->bphd", e_HxPxS.astype(jnp.float32), k0)
  fv_BxPxHxD = jnp.einsum("hps,bshd->bphd", f_HxPxS.astype(jnp.float32), v0)
  return ek_BxPxHxD, fv_BxPxHxD


def linformer_probs(q_BxLxHxD: jax.Array, ek_BxPxHxD: jax.Array) -> jax.Array:
  """softmax(q (E k)ᵀ / √D) over the k projected keys: fp32 BxHxLxP."""
  scale = q_BxLxHxD.shape[-1] ** -0.5
  logits_BxHxLxP = jnp.einsum("blhd,bphd->bhlp", q_BxLxHxD.astype(jnp.float32), ek_BxPxHxD) * scale
  return jax.nn.softmax(logits_BxHxLxP, axis=-1)


class LinformerProjections(nn.Module):
  """E, F sliced to the first `length` columns, broadcast to one per head: fp32 HxPxL each."""

  proj_dim: int
  max_len: int
  sharing: str

  @nn.compact
  def __call__(self, num_heads: int, length: int) -> tuple[jax.Array, jax.Array]:
    if length > self.max_len:
      raise ValueError(
        f"linformer: sequence length {length} exceeds max_len={self.max_len}; raise the mixer option max_len"
      )
    if self.sharing == "none":
      shape, axes, batch_axis = (num_heads, self.proj_dim, self.max_len), ("heads", None, None), (0,)
    else:
      shape, axes, batch_axis = (self.proj_dim, self.max_len), (None, None), ()
    init = nn.initializers.variance_scaling(0.5, "fan_avg", "uniform", in_axis=-1, out_axis=-2, batch_axis=batch_axis)
    e = self.param("E", nn.with_logical_partitioning(init, axes), shape)
    f = e if self.sharing == "kv" else self.param("F", nn.with_logical_partitioning(init, axes), shape)
    e, f = (x[..., :length] for x in (e, f))
    return tuple(jnp.broadcast_to(x, (num_heads, self.proj_dim, length)) for x in (e, f))


@register(
  "linformer",
  supports_causal=False,
  supports_packing=False,
  length_invariant=True,
  positions=("learned", "rope"),
  complexity="O(N k d)",
  state_size=lambda L, H, D: 4 * H * (L * 256 + 2 * 256 * D),  # LxP scores + (Ek, Fv) at the default k = 256
  paper="Wang et al. 2020, arXiv:2006.04768",
)
class LinformerAttention(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    proj_dim: int = 256  # k, the projected length
    max_len: int = 8192  # columns of E, F; a batch of length L uses the first L
    sharing: str = "headwise"  # "none" (E_h, F_h per head), "headwise" (E, F for all heads), "kv" (E = F)

    def __post_init__(self):
      if self.proj_dim <= 0:
        raise ValueError(f"linformer proj_dim must be positive, got {self.proj_dim}")
      if self.max_len <= 0:
        raise ValueError(f"linformer max_len must be positive, got {self.max_len}")
      if self.sharing not in SHARING:
        raise ValueError(f"linformer sharing {self.sharing!r}; choose one of {', '.join(SHARING)}")

  cfg: Config = Config()

  def setup(self):
    self.projections = LinformerProjections(self.cfg.proj_dim, self.cfg.max_len, self.cfg.sharing)

  def _probs_and_values(self, q, k, v, segments: Segments):
    e_HxPxS, f_HxPxS = self.projections(q.shape[2], k.shape[1])
    ek_BxPxHxD, fv_BxPxHxD = projected_keys_values(k, v, e_HxPxS, f_HxPxS, segments)
    return linformer_probs(q, ek_BxPxHxD), fv_BxPxHxD, f_HxPxS

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("linformer", segments, causal)
    p_BxHxLxP, fv_BxPxHxD, _ = self._probs_and_values(q, k, v, segments)
    out = jnp.einsum("bhlp,bphd->blhd", p_BxHxLxP, fv_BxPxHxD)
    return zero_padding(out.astype(v.dtype), segments)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    """W = softmax(q (E k)ᵀ/√D) F with padded key columns and padded query rows zero: fp32 BxHxLxS."""
    check_call("linformer", segments, causal)
    p_BxHxLxP, _, f_HxPxS = self._probs_and_values(q, k, v, segments)
    valid_BxS = segments.valid
    f_BxHxPxS = jnp.where(valid_BxS[:, None, None, :], f_HxPxS.astype(jnp.float32)[None], 0.0)
    w_BxHxLxS = jnp.einsum("bhlp,bhps->bhls", p_BxHxLxP, f_BxHxPxS, precision=jax.lax.Precision.HIGHEST)
    return jnp.where(valid_BxS[:, None, :, None], w_BxHxLxS, 0.0)
