"""Sliding-window (local) softmax attention, as the sliding window of Longformer (Beltagy et al. 2020,
arXiv:2004.05150, §3.1) and Image Transformer / Sparse Transformer local attention (arXiv:1802.05751,
arXiv:1904.10509), computed blockwise:

    out_i = Σ_{j∈W(i)} softmax_j(q_i·k_j / √D) v_j,
    W(i) = {j : |i − j| ≤ w, seg_j = seg_i ≠ 0}          (bidirectional)
    W(i) = {j : i − w ≤ j ≤ i, seg_j = seg_i ≠ 0}        (causal)

Blockwise in O(N·w): the row is cut into N blocks of C ≥ w rows; block n attends blocks n−1, n, n+1 (n−1, n when
causal), 3C (2C) key slots, under a static CxKC band mask (i − j does not depend on n) and the segment ids of the
slots. Rows outside the row (edge blocks) carry segment id 0 and are masked like padding. No LxL matrix or mask
exists in the fast path; the score tiles are N·C·3C = 3·L·C.

`window` is one-sided: the paper's window size w_paper (tokens attended in total) is 2·window + 1.
Deviations: no dilation, one window for every layer and head (Longformer varies w per layer and dilates some
heads).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.attention import blockwise as bw
from research.attention import check_call, register
from research.attention.masks import Segments, attention_mask, zero_padding

DEFAULT_WINDOW = 16


def window_offsets(causal: bool) -> tuple[int, ...]:
  return (-1, 0) if causal else (-1, 0, 1)


def window_band(block: int, window: int, causal: bool):
  """Static CxKC band for blocks of `block` rows attending their neighbour blocks."""
  return bw.band(block, window_offsets(causal), 0 if causal else -window, window)


def window_partial(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, segments: Segments, *, window: int, block: int, causal: bool):
  """Blockwise sliding-window attention: (o_BxHxNxCxD, lse_BxHxNxC) over W(i), padded to N·C rows."""
  offsets = window_offsets(causal)
  q_BxHxNxCxD, k_BxHxNxCxD, v_BxHxNxCxD = (bw.heads_to_blocks(x, block) for x in (q_BxLxHxD, k_BxLxHxD, v_BxLxHxD))
  seg_BxL = bw.pad_axis(segments.segment_ids, 1, block)
  seg_BxNxC = seg_BxL.reshape(seg_BxL.shape[0], -1, block)
  seg_BxNxKC = bw.neighbours(seg_BxNxC, 1, offsets, fill=0)
  k_BxHxNxKCxD, v_BxHxNxKCxD = (bw.neighbours(x, 2, offsets) for x in (k_BxHxNxCxD, v_BxHxNxCxD))
  mask_BxNxCxKC = (
    jnp.asarray(window_band(block, window, causal))
    & (seg_BxNxC[..., :, None] == seg_BxNxKC[..., None, :])
    & (seg_BxNxKC[..., None, :] > 0)
  )
  return bw.attend(q_BxHxNxCxD, k_BxHxNxKCxD, v_BxHxNxKCxD, mask_BxNxCxKC[:, None])


def local_attention(q, k, v, segments: Segments, *, window: int, block: int, causal: bool) -> jax.Array:
  o_BxHxNxCxD, _ = window_partial(q, k, v, segments, window=window, block=block, causal=causal)
  return zero_padding(bw.blocks_to_heads(o_BxHxNxCxD, q.shape[1]).astype(q.dtype), segments)


def band_mask(length: int, window: int, causal: bool) -> jax.Array:
  """Dense LxL band (oracle only)."""
  diff_LxL = jnp.arange(length)[:, None] - jnp.arange(length)[None, :]
  return (diff_LxL >= 0) & (diff_LxL <= window) if causal else jnp.abs(diff_LxL) <= window


def local_weights(q, k, segments: Segments, *, window: int, causal: bool) -> jax.Array:
  mask_Bx1xLxL = attention_mask(segments, causal) & band_mask(q.shape[1], window, causal)
  return bw.dense_weights(q, k, mask_Bx1xLxL)


@register(
  "local",
  supports_causal=True,
  supports_packing=True,
  length_invariant=True,
  positions=("learned", "rope"),
  complexity="O(N w d)",
  state_size=lambda L, H, D: 4 * H * L * 3 * DEFAULT_WINDOW,  # score tiles N·C·3C at the default C = w = 16
  paper="Beltagy et al. 2020 (sliding window), arXiv:2004.05150",
)
class LocalAttention(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    window: int = DEFAULT_WINDOW  # one-sided: |i - j| <= window (i - window <= j <= i when causal)
    block_size: int | None = None  # rows per block, >= window; None: = window

    def __post_init__(self):
      if not isinstance(self.window, int) or self.window < 1:
        raise ValueError(f"local window must be an int >= 1, got {self.window!r}")
      if self.block_size is not None and (not isinstance(self.block_size, int) or self.block_size < self.window):
        raise ValueError(f"local block_size must be None or an int >= window={self.window}, got {self.block_size!r}")

    @property
    def block(self) -> int:
      return self.window if self.block_size is None else self.block_size

  cfg: Config = Config()

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("local", segments, causal)
    return local_attention(q, k, v, segments, window=self.cfg.window, block=self.cfg.block, causal=causal)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    return local_weights(q, k, segments, window=self.cfg.window, causal=causal)
