"""Synthesizer (Tay et al. 2021, "Synthesizer: Rethinking Self-Attention in Transformer Models", arXiv:2005.00743).

Attention logits are synthesized without query-key dot products; per head h, with ℓ = `max_len`:

  mode="dense"                      logits_i = W2 relu(W1 x_i + b1) + b2 ∈ R^ℓ         (paper eq. 1; W1 D×D, W2 D×ℓ)
  mode="dense", factorized=True     a_i = F_A(x_i) ∈ R^a, b_i = F_B(x_i) ∈ R^b, a·b = ℓ, each F a two-layer MLP
                                    as above; logits_i[p] = a_i[p // b] · b_i[p mod b]
  mode="random"                     logits_i = R[i] with R ∈ R^{ℓ×ℓ} (learned; `trainable=False`: fixed)
  mode="random", factorized=True    R = R1 R2ᵀ, R1, R2 ∈ R^{ℓ×r} (r = `rank`)

    out_i = Σ_j softmax_j(logits_i[p_j] over allowed keys j) v_j

Logits are indexed by POSITION: a query at position p_i (its position inside its own segment, `Segments.positions`)
reads entry p_j of its logit row for key j (dense), or R[p_i, p_j] (random). Keys are masked to the query's own
non-padding segment, and to p_j ≤ p_i when causal, before the softmax. Because a packed sequence sees exactly
the positions it would see alone, packing is exact (supports_packing=True); padding is masked, so extra padding
changes nothing (length-invariant); causal masking is a mask before the softmax (supports_causal=True).
`implied_weights` is the softmax matrix itself and the fast path is that matrix times v (O(N² d)).

Deviations / choices:
  * x_i is the encoder's query projection q_i of the head (the paper feeds the layer input X_i to F); k is never
    used, and random mode ignores q as well. The encoder's v and output projections surround the mixer, as in the
    paper (G(X) is the value projection).
  * The paper's F_A, F_B ("projections to a and b dimensions") are taken as two-layer MLPs like F. The paper
    combines the tiled vectors so that no two entries of a block repeat; here the combination is the flattened
    outer product, logits[p] = a[p // b] · b[p mod b], which realises every product a_s b_t exactly once.
  * A batch of length L ≤ max_len uses the first L entries of each logit row (positions are < L); L > max_len is a
    clear error. `max_len` is a Config field (default 512); parameters scale as H·D·ℓ (dense) or H·ℓ² (random).
  * Initialisation (not given in the paper): W1, W2 (and F_A, F_B) lecun-normal, biases zero; R ~ N(0, 1);
    R1, R2 ~ N(0, 1/√r) so that (R1 R2ᵀ)_pq has unit variance. Fixed random (`trainable=False`) draws R (or R1, R2)
    from `seed` at trace time, so it is a constant, not a parameter: every layer (and every call) sees the same
    fixed matrices for a given seed, distinct per head.
  * The mixture variants (random + dense, + vanilla attention) are not implemented.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.attention import check_call, register
from research.attention.masks import Segments, attention_mask, zero_padding

MODES = ("dense", "random")


@dataclasses.dataclass(frozen=True)
class SynthesizerConfig:
  mode: str = "dense"  # "dense" (logits from the query) or "random" (a logits matrix per head)
  factorized: bool = False  # dense: a·b outer product; random: R = R1 R2ᵀ
  max_len: int = 512  # ℓ, the length of a logit row; a batch of length L <= max_len uses the first L entries
  factor: int = 0  # factorized dense: a, with b = max_len // a; 0 = the largest divisor of max_len <= √max_len
  rank: int = 8  # factorized random: r
  trainable: bool = True  # random mode: False = the paper's fixed random synthesizer (drawn from `seed`)
  seed: int = 0

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"synthesizer mode {self.mode!r}; choose one of {', '.join(MODES)}")
    if self.max_len <= 0:
      raise ValueError(f"synthesizer max_len must be positive, got {self.max_len}")
    if self.rank <= 0:
      raise ValueError(f"synthesizer rank must be positive, got {self.rank}")
    if self.factor < 0 or (self.factor and self.max_len % self.factor):
      raise ValueError(f"synthesizer factor={self.factor} must be a divisor of max_len={self.max_len} (or 0 = auto)")
    if not self.trainable and self.mode != "random":
      raise ValueError(f"synthesizer trainable=False applies to mode='random' only (mode={self.mode!r})")

  @property
  def factors(self) -> tuple[int, int]:
    """(a, b) with a·b = max_len for the factorized dense synthesizer."""
    a = self.factor or max(f for f in range(1, math.isqrt(self.max_len) + 1) if self.max_len % f == 0)
    return a, self.max_len // a


def _clip_positions(segments: Segments, length: int) -> jax.Array:
  """BxL int32 positions, clipped into [0, L) (padding carries 0; valid positions are < L by construction)."""
  return jnp.clip(segments.positions, 0, length - 1).astype(jnp.int32)


def gather_dense_logits(rows_BxLxHxP: jax.Array, positions_BxL: jax.Array) -> jax.Array:
  """logits[b, h, i, j] = rows[b, i, h, p_j]: BxHxLxL (rows are indexed by key position)."""
  rows_BxHxLxP = jnp.transpose(rows_BxLxHxP, (0, 2, 1, 3))
  b, h, length, _ = rows_BxHxLxP.shape
  idx_BxHxLxL = jnp.broadcast_to(positions_BxL[:, None, None, :], (b, h, length, length))
  return jnp.take_along_axis(rows_BxHxLxP, idx_BxHxLxL, axis=-1)


def gather_random_logits(r_HxPxP: jax.Array, positions_BxL: jax.Array) -> jax.Array:
  """logits[b, h, i, j] = R[h, p_i, p_j]: BxHxLxL."""
  rows_HxBxLxP = jnp.take(r_HxPxP, positions_BxL, axis=1)
  h, b, length, _ = rows_HxBxLxP.shape
  idx = jnp.broadcast_to(positions_BxL[None, :, None, :], (h, b, length, length))
  return jnp.transpose(jnp.take_along_axis(rows_HxBxLxP, idx, axis=-1), (1, 0, 2, 3))


def synthesizer_weights(logits_BxHxLxS: jax.Array, segments: Segments, causal: bool) -> jax.Array:
  """softmax over the allowed keys (same segment, j ≤ i if causal): fp32 BxHxLxS, zero rows at padding."""
  mask_Bx1xLxS = attention_mask(segments, causal)
  logits = jnp.where(mask_Bx1xLxS, logits_BxHxLxS.astype(jnp.float32), jnp.finfo(jnp.float32).min)
  return jnp.where(mask_Bx1xLxS, jax.nn.softmax(logits, axis=-1), 0.0)


class _TwoLayer(nn.Module):
  """Per-head W2 relu(W1 x + b1) + b2: BxLxHxD -> BxLxHxout (fp32)."""

  out_dim: int

  @nn.compact
  def __call__(self, x_BxLxHxD: jax.Array) -> jax.Array:
    _, _, h, d = x_BxLxHxD.shape
    p = lambda name, init, axes, shape: self.param(name, nn.with_logical_partitioning(init, axes), shape)  # noqa: E731
    lecun = nn.initializers.lecun_normal(in_axis=1, out_axis=2, batch_axis=(0,))
    w1_HxDxD = p("w1", lecun, ("heads", "kv", None), (h, d, d))
    b1_HxD = p("b1", nn.initializers.zeros, ("heads", None), (h, d))
    w2_HxDxO = p("w2", lecun, ("heads", None, None), (h, d, self.out_dim))
    b2_HxO = p("b2", nn.initializers.zeros, ("heads", None), (h, self.out_dim))
    hidden = jax.nn.relu(jnp.einsum("blhd,hde->blhe", x_BxLxHxD.astype(jnp.float32), w1_HxDxD) + b1_HxD)
    return jnp.einsum("blhe,heo->blho", hidden, w2_HxDxO) + b2_HxO


class SynthesizerLogits(nn.Module):
  """The synthesized logits, gathered by position: fp32 BxHxLxL (unmasked)."""

  cfg: SynthesizerConfig

  @nn.compact
  def __call__(self, q_BxLxHxD: jax.Array, segments: Segments) -> jax.Array:
    cfg = self.cfg
    _, length, h, _ = q_BxLxHxD.shape
    if length > cfg.max_len:
      raise ValueError(
        f"synthesizer: sequence length {length} exceeds max_len={cfg.max_len}; raise the mixer option max_len"
      )
    pos_BxL = _clip_positions(segments, length)
    if cfg.mode == "dense":
      if cfg.factorized:
        a, b = cfg.factors
        a_BxLxHxA = _TwoLayer(a, name="f_a")(q_BxLxHxD)
        b_BxLxHxB = _TwoLayer(b, name="f_b")(q_BxLxHxD)
        rows = (a_BxLxHxA[..., :, None] * b_BxLxHxB[..., None, :]).reshape(*a_BxLxHxA.shape[:3], cfg.max_len)
      else:
        rows = _TwoLayer(cfg.max_len, name="f")(q_BxLxHxD)
      return gather_dense_logits(rows[..., :length], pos_BxL)
    if cfg.factorized:
      r1, r2 = self._matrices(("r1", "r2"), (h, cfg.max_len, cfg.rank), cfg.rank**-0.25)
      r1_HxBxLxR, r2_HxBxLxR = (jnp.take(x[:, :length], pos_BxL, axis=1) for x in (r1, r2))
      return jnp.einsum("hbir,hbjr->bhij", r1_HxBxLxR, r2_HxBxLxR)
    (r,) = self._matrices(("r",), (h, cfg.max_len, cfg.max_len), 1.0)
    return gather_random_logits(r[:, :length, :length], pos_BxL)

  def _matrices(self, names: tuple[str, ...], shape: tuple[int, ...], std: float) -> list[jax.Array]:
    init = nn.initializers.normal(std)
    if self.cfg.trainable:
      axes = ("heads", None, None)
      return [self.param(n, nn.with_logical_partitioning(init, axes), shape).astype(jnp.float32) for n in names]
    keys = jax.random.split(jax.random.key(self.cfg.seed), len(names))
    return [init(key, shape, jnp.float32) for key in keys]


@register(
  "synthesizer",
  supports_causal=True,
  supports_packing=True,
  length_invariant=True,
  positions=("learned",),
  complexity="O(N^2 d)",
  state_size=lambda L, H, D: 4 * H * L * L,  # the materialized LxS weights
  paper="Tay et al. 2021, arXiv:2005.00743",
)
class SynthesizerAttention(nn.Module):
  Config = SynthesizerConfig

  cfg: Config = Config()

  def setup(self):
    self.logits = SynthesizerLogits(self.cfg)

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("synthesizer", segments, causal)
    w_BxHxLxS = synthesizer_weights(self.logits(q, segments), segments, causal)
    out = jnp.einsum("bhls,bshd->blhd", w_BxHxLxS, v.astype(jnp.float32))
    return zero_padding(out.astype(v.dtype), segments)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("synthesizer", segments, causal)
    return synthesizer_weights(self.logits(q, segments), segments, causal)
