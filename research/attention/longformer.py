"""Longformer attention (Beltagy et al. 2020, "Longformer: The Long-Document Transformer", arXiv:2004.05150):
a sliding window plus symmetric global attention on designated tokens.

    W(i) = {j : |i − j| ≤ w}   (causal: i − w ≤ j ≤ i)          G = the global tokens of i's segment
    keys(i) = {j : seg_j = seg_i ≠ 0, j ≤ i if causal} ∩ (everything   if i ∈ G,
                                                          W(i) ∪ G    otherwise)
    out_i = Σ_{j∈keys(i)} softmax_j(q_i·k_j / √D) v_j

Global tokens are the tokens whose position inside their segment is in `global_positions` (default (0,): the
first token of each sequence, the [CLS] of the paper's classification setup), so every packed sequence has its
own global tokens and packing is exact.

Computation, never LxL: the window part is blockwise as in `local` (O(N·w)); every query against the (at most
g = max_segments·len(global_positions)) global keys is O(N·g), with the global keys that already lie in W(i)
masked there so that no key is counted twice; the global queries against all keys are O(g·N). The two partial
softmaxes of a non-global query are merged exactly through their log-normalisers (see `blockwise`).

Deviations from the paper: (1) one set of projections — the paper uses separate Q_g, K_g, V_g for the global
attention; here the mixer sees one (q, k, v) and uses it for both parts; (2) no dilation and one window for every
layer and head; (3) `window` is one-sided: the paper's w (tokens in the window) is 2·window + 1; (4) causal mode
(not in the paper's encoder): every part restricted to j ≤ i, global tokens then see all earlier tokens.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.attention import check_call, register
from research.attention.blockwise import attend, blocks_to_heads, dense_weights, merge
from research.attention.local import band_mask, window_partial
from research.attention.masks import Segments, attention_mask, zero_padding

DEFAULT_WINDOW = 16


def global_token_mask(segments: Segments, global_positions: tuple[int, ...]) -> jax.Array:
  """BxL bool: valid tokens whose in-segment position is one of `global_positions`."""
  hit_BxL = jnp.zeros(segments.positions.shape, bool)
  for p in global_positions:
    hit_BxL |= segments.positions == p
  return hit_BxL & segments.valid


def _gather_rows(x_BxLx: jax.Array, idx_BxG: jax.Array) -> jax.Array:
  return jax.vmap(lambda x, i: jnp.take(x, i, axis=0, mode="clip"))(x_BxLx, idx_BxG)


def longformer_attention(
  q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, segments: Segments, *, window: int, block: int, global_positions, causal: bool
) -> jax.Array:
  b, length, _, _ = q_BxLxHxD.shape
  g = min(length, segments.max_segments * len(global_positions))  # static bound on global tokens per row
  seg_BxL = segments.segment_ids
  is_global_BxL = global_token_mask(segments, global_positions)
  rank_BxL = jnp.cumsum(is_global_BxL, axis=1) - 1  # index of a global token among its row's globals
  slot_BxL = jnp.where(is_global_BxL, rank_BxL, g)
  idx_BxG = jax.vmap(lambda s: jnp.full((g,), length, jnp.int32).at[s].set(jnp.arange(length), mode="drop"))(slot_BxL)
  seg_BxG = jnp.where(idx_BxG < length, _gather_rows(seg_BxL, idx_BxG), 0)
  qg_BxGxHxD, kg_BxGxHxD, vg_BxGxHxD = (_gather_rows(x, idx_BxG) for x in (q_BxLxHxD, k_BxLxHxD, v_BxLxHxD))
  to_bh = lambda x: jnp.transpose(x, (0, 2, 1, 3))  # noqa: E731  BxLxHxD -> BxHxLxD
  pos_L = jnp.arange(length)

  # 1) the sliding window, blockwise (all queries)
  o_w_BxHxNxCxD, lse_w_BxHxNxC = window_partial(
    q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, segments, window=window, block=block, causal=causal
  )
  o_w_BxHxLxD = jnp.transpose(blocks_to_heads(o_w_BxHxNxCxD, length), (0, 2, 1, 3))
  lse_w_BxHxL = lse_w_BxHxNxC.reshape(b, lse_w_BxHxNxC.shape[1], -1)[:, :, :length]

  # 2) every query -> the global keys outside its window: O(N·g)
  diff_BxLxG = pos_L[None, :, None] - idx_BxG[:, None, :]
  in_window = (diff_BxLxG >= 0) & (diff_BxLxG <= window) if causal else jnp.abs(diff_BxLxG) <= window
  mask_BxLxG = (seg_BxL[:, :, None] == seg_BxG[:, None, :]) & (seg_BxG[:, None, :] > 0) & ~in_window
  if causal:
    mask_BxLxG &= diff_BxLxG >= 0
  o_g_BxHxLxD, lse_g_BxHxL = attend(to_bh(q_BxLxHxD), to_bh(kg_BxGxHxD), to_bh(vg_BxGxHxD), mask_BxLxG[:, None])
  o_BxHxLxD, _ = merge(jnp.stack([o_w_BxHxLxD, o_g_BxHxLxD]), jnp.stack([lse_w_BxHxL, lse_g_BxHxL]))

  # 3) global queries -> every key of their segment: O(g·N)
  mask_BxGxL = (seg_BxG[:, :, None] == seg_BxL[:, None, :]) & (seg_BxL[:, None, :] > 0)
  if causal:
    mask_BxGxL &= pos_L[None, None, :] <= idx_BxG[:, :, None]
  o_q_BxHxGxD, _ = attend(to_bh(qg_BxGxHxD), to_bh(k_BxLxHxD), to_bh(v_BxLxHxD), mask_BxGxL[:, None])
  o_q_BxHxLxD = jax.vmap(lambda o, r: jnp.take(o, r, axis=1, mode="clip"))(o_q_BxHxGxD, rank_BxL)
  o_BxHxLxD = jnp.where(is_global_BxL[:, None, :, None], o_q_BxHxLxD, o_BxHxLxD)
  return zero_padding(to_bh(o_BxHxLxD).astype(q_BxLxHxD.dtype), segments)


def longformer_mask(segments: Segments, *, window: int, global_positions, causal: bool) -> jax.Array:
  """Dense Bx1xLxL admissibility (oracle only)."""
  is_global_BxL = global_token_mask(segments, global_positions)
  pattern_BxLxL = (
    band_mask(segments.segment_ids.shape[1], window, causal)[None]
    | is_global_BxL[:, :, None]
    | is_global_BxL[:, None, :]
  )
  return attention_mask(segments, causal) & pattern_BxLxL[:, None]


@register(
  "longformer",
  supports_causal=True,
  supports_packing=True,
  length_invariant=True,
  positions=("learned", "rope"),
  complexity="O(N (w + g) d)",
  # window score tiles N·C·3C (C = w = 16) + the L×g and g×L global scores with g = 1
  state_size=lambda L, H, D: 4 * H * (3 * L * DEFAULT_WINDOW + 2 * L),
  paper="Beltagy et al. 2020, arXiv:2004.05150",
)
class LongformerAttention(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    window: int = DEFAULT_WINDOW  # one-sided: |i - j| <= window (i - window <= j <= i when causal)
    global_positions: tuple[int, ...] = (0,)  # in-segment positions of the global tokens; (0,) = [CLS]
    block_size: int | None = None  # rows per window block, >= window; None: = window

    def __post_init__(self):
      if not isinstance(self.window, int) or self.window < 1:
        raise ValueError(f"longformer window must be an int >= 1, got {self.window!r}")
      if self.block_size is not None and (not isinstance(self.block_size, int) or self.block_size < self.window):
        raise ValueError(
          f"longformer block_size must be None or an int >= window={self.window}, got {self.block_size!r}"
        )
      if isinstance(self.global_positions, list):  # e.g. from a YAML/JSON override
        object.__setattr__(self, "global_positions", tuple(self.global_positions))
      gp = self.global_positions
      if (
        not isinstance(gp, tuple)
        or not gp
        or len(set(gp)) != len(gp)
        or not all(isinstance(p, int) and p >= 0 for p in gp)
      ):
        raise ValueError(
          f"longformer global_positions must be a non-empty tuple of distinct ints >= 0 (positions inside each "
          f"sequence, e.g. (0,) for [CLS]), got {gp!r}"
        )

    @property
    def block(self) -> int:
      return self.window if self.block_size is None else self.block_size

  cfg: Config = Config()

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("longformer", segments, causal)
    cfg = self.cfg
    return longformer_attention(
      q, k, v, segments, window=cfg.window, block=cfg.block, global_positions=cfg.global_positions, causal=causal
    )

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    cfg = self.cfg
    mask = longformer_mask(segments, window=cfg.window, global_positions=cfg.global_positions, causal=causal)
    return dense_weights(q, k, mask)
