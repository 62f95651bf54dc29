"""BigBird block-sparse attention (Zaheer et al. 2020, "Big Bird: Transformers for Longer Sequences",
arXiv:2007.14062): BIGBIRD-ITC (global tokens taken from the sequence) in its blocked form, where every
pattern is defined on blocks of b tokens.

The padded row is cut into N blocks of b rows. Query block n attends the key blocks

    K(n) = {0, …, n_g−1}                                   global blocks (attended by everyone)
         ∪ {n−⌊w/2⌋, …, n+⌊w/2⌋} ∩ [0, N)                 sliding window of w blocks (paper: w = 3)
         ∪ R_h(n)                                          r random blocks, distinct from the above
    and every block n < n_g (a global block) attends all N blocks.

    out_i = Σ_{j : block(j) ∈ K(block(i)), seg_j = seg_i ≠ 0} softmax_j(q_i·k_j / √D) v_j

R_h(n) is drawn per head h with numpy's legacy RandomState seeded by (seed, N, causal) — a stream NumPy keeps
frozen across versions (NEP 19) — so the pattern is a pure function of the config seed and the padded length,
the same on every call, host and backend (`block_pattern` returns it). The key
blocks of each query block are gathered (|K(n)| ≤ n_g + w + r blocks), so memory is O(N·b·(n_g + w + r)); the
n_g global query blocks attend the whole row densely, O(n_g·b·N).

Capabilities, honestly: the global and random blocks are positional (block indices of the row), so a packed
sequence would neither have its own global blocks nor the same random blocks as alone -> supports_packing=False
(a clear error). R_h(n) depends on N, so extra padding changes the pattern -> length_invariant=False. Padding is
exact (masked keys, zero outputs).

Deviations from the paper: (1) global blocks are the first n_g blocks (the ITC reference code makes the first
and last block global); (2) random blocks are drawn among all N blocks of the padded row (static shapes), so in
a row shorter than L some may fall on padding and are wasted; (3) when fewer
than r blocks are eligible the row gets fewer random blocks (no duplicates are ever counted); (4) causal mode
(not in the paper): the same construction restricted to j ≤ i, with the window {n−⌊w/2⌋..n} and random blocks
drawn among strictly earlier eligible blocks; (5) no separate handling of the first/last query blocks beyond
the clipping of the window at the row ends.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.attention import check_call, register
from research.attention.blockwise import attend, dense_weights, heads_to_blocks, pad_axis
from research.attention.masks import Segments, attention_mask, zero_padding


@functools.lru_cache(maxsize=64)
def block_pattern(
  num_blocks: int, num_heads: int, *, num_global: int, window_blocks: int, num_random: int, seed: int, causal: bool
) -> tuple[np.ndarray, np.ndarray]:
  """Static key-block table of the non-global query blocks n_g..N−1: (idx_HxMxK int32, valid_HxMxK bool).

  Row m is query block n = n_g + m; K = n_g + w + r slots (n_g + (w+1)/2 + r when causal): the global blocks,
  the window, the random blocks (ascending), then invalid slots (index 0, valid False). Blocks never repeat in a
  row. Pure function of its arguments (cached; the arrays are read-only).
  """
  half = window_blocks // 2
  width = num_global + (half + 1 if causal else window_blocks) + num_random
  rows = max(num_blocks - num_global, 0)
  idx = np.zeros((num_heads, rows, width), np.int32)
  valid = np.zeros((num_heads, rows, width), bool)
  rng = np.random.RandomState([seed, num_blocks, int(causal)])  # legacy: a frozen stream
  blocks = np.arange(num_blocks)
  for h in range(num_heads):
    for m in range(rows):
      n = num_global + m
      hi = n if causal else min(n + half, num_blocks - 1)
      chosen = list(range(num_global)) + list(range(max(n - half, num_global), hi + 1))
      eligible = (blocks < n) if causal else np.ones(num_blocks, bool)
      eligible[chosen] = False
      candidates = blocks[eligible]
      if num_random and candidates.size:
        chosen += np.sort(rng.choice(candidates, size=min(num_random, candidates.size), replace=False)).tolist()
      idx[h, m, : len(chosen)] = chosen
      valid[h, m, : len(chosen)] = True
  idx.setflags(write=False)
  valid.setflags(write=False)
  return idx, valid


def block_mask(num_blocks: int, idx_HxMxK: np.ndarray, valid_HxMxK: np.ndarray, num_global: int) -> np.ndarray:
  """HxNxN bool block-level pattern (global query rows see everything)."""
  h = idx_HxMxK.shape[0]
  mask = np.zeros((h, num_blocks, num_blocks), bool)
  mask[:, :num_global] = True
  hh, mm, kk = np.nonzero(valid_HxMxK)
  mask[hh, num_global + mm, idx_HxMxK[hh, mm, kk]] = True
  return mask


def bigbird_attention(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, segments: Segments, *, cfg, causal: bool) -> jax.Array:
  b, length, h, _ = q_BxLxHxD.shape
  c = cfg.block_size
  q_BxHxNxCxD, k_BxHxNxCxD, v_BxHxNxCxD = (heads_to_blocks(x, c) for x in (q_BxLxHxD, k_BxLxHxD, v_BxLxHxD))
  n = q_BxHxNxCxD.shape[2]
  ng = min(cfg.num_global_blocks, n)
  seg_BxLp = pad_axis(segments.segment_ids, 1, c)
  pos_Lp = jnp.arange(n * c)
  to_bh = lambda x: jnp.transpose(x, (0, 2, 1, 3))  # noqa: E731  BxLxHxD -> BxHxLxD

  # global query blocks: dense against the whole row, O(n_g·b·N)
  mask_BxGxLp = (seg_BxLp[:, : ng * c, None] == seg_BxLp[:, None, :]) & (seg_BxLp[:, None, :] > 0)
  if causal:
    mask_BxGxLp &= pos_Lp[None, None, :] <= pos_Lp[None, : ng * c, None]
  k_BxHxLpxD, v_BxHxLpxD = (x.reshape(b, h, n * c, -1) for x in (k_BxHxNxCxD, v_BxHxNxCxD))
  o_glob_BxHxGxD, _ = attend(
    q_BxHxNxCxD[:, :, :ng].reshape(b, h, ng * c, q_BxLxHxD.shape[-1]), k_BxHxLpxD, v_BxHxLpxD, mask_BxGxLp[:, None]
  )
  if ng == n:
    o_BxHxLpxD = o_glob_BxHxGxD
  else:
    # the other query blocks: gather their key blocks, O(N·b·K)
    idx_np, valid_np = block_pattern(
      n,
      h,
      num_global=ng,
      window_blocks=cfg.window_blocks,
      num_random=cfg.num_random_blocks,
      seed=cfg.seed,
      causal=causal,
    )
    idx_HxMxK, kk = jnp.asarray(idx_np), idx_np.shape[-1]
    head_Hx1x1 = jnp.arange(h)[:, None, None]
    k_BxHxMxKCxD, v_BxHxMxKCxD = (
      x[:, head_Hx1x1, idx_HxMxK].reshape(b, h, n - ng, kk * c, -1) for x in (k_BxHxNxCxD, v_BxHxNxCxD)
    )
    seg_BxNxC = seg_BxLp.reshape(b, n, c)
    segk_BxHxMxKC = seg_BxNxC[:, idx_HxMxK].reshape(b, h, n - ng, kk * c)
    segq_Bx1xMxC = seg_BxNxC[:, None, ng:]
    valid_HxMxKC = jnp.repeat(jnp.asarray(valid_np), c, axis=-1)
    mask_BxHxMxCxKC = (
      valid_HxMxKC[None, :, :, None, :]
      & (segq_Bx1xMxC[..., :, None] == segk_BxHxMxKC[..., None, :])
      & (segk_BxHxMxKC[..., None, :] > 0)
    )
    if causal:
      kpos_HxMxKC = (idx_HxMxK[..., None] * c + jnp.arange(c)).reshape(h, n - ng, kk * c)
      qpos_MxC = pos_Lp[ng * c :].reshape(n - ng, c)
      mask_BxHxMxCxKC &= (kpos_HxMxKC[:, :, None, :] <= qpos_MxC[None, :, :, None])[None]
    o_BxHxMxCxD, _ = attend(q_BxHxNxCxD[:, :, ng:], k_BxHxMxKCxD, v_BxHxMxKCxD, mask_BxHxMxCxKC)
    o_BxHxLpxD = jnp.concatenate([o_glob_BxHxGxD, o_BxHxMxCxD.reshape(b, h, (n - ng) * c, -1)], axis=2)
  out = to_bh(o_BxHxLpxD)[:, :length]
  return zero_padding(out.astype(q_BxLxHxD.dtype), segments)


def bigbird_mask(segments: Segments, num_heads: int, *, cfg, causal: bool) -> jax.Array:
  """Dense BxHxLxL admissibility (oracle only), from the same block table."""
  length = segments.segment_ids.shape[1]
  c = cfg.block_size
  n = -(-length // c)
  ng = min(cfg.num_global_blocks, n)
  idx, valid = block_pattern(
    n,
    num_heads,
    num_global=ng,
    window_blocks=cfg.window_blocks,
    num_random=cfg.num_random_blocks,
    seed=cfg.seed,
    causal=causal,
  )
  blocks_HxNxN = block_mask(n, idx, valid, ng)
  tok_block = np.arange(length) // c
  pattern_HxLxL = blocks_HxNxN[:, tok_block][:, :, tok_block]
  return attention_mask(segments, causal) & jnp.asarray(pattern_HxLxL)[None]


@register(
  "bigbird",
  supports_causal=True,
  supports_packing=False,
  length_invariant=False,
  positions=("learned", "rope"),
  complexity="O(N b (g + w + r) d)",
  # score tiles at the defaults (b = 8, 1 global + 3 window + 1 random blocks) + the global rows b×N
  state_size=lambda L, H, D: 4 * H * (L * 5 * 8 + 8 * L),
  paper="Zaheer et al. 2020, arXiv:2007.14062",
)
class BigBirdAttention(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    block_size: int = 8  # rows per block (paper: 64)
    num_global_blocks: int = 1  # the first blocks of the row are global
    window_blocks: int = 3  # odd: the block itself and (w-1)/2 blocks on each side (paper: 3)
    num_random_blocks: int = 1  # per query block and head (paper: 3)
    seed: int = 0  # fixes the random blocks

    def __post_init__(self):
      for name, lo in (("block_size", 1), ("num_global_blocks", 0), ("num_random_blocks", 0), ("seed", 0)):
        value = getattr(self, name)
        if not isinstance(value, int) or value < lo:
          raise ValueError(f"bigbird {name} must be an int >= {lo}, got {value!r}")
      if not isinstance(self.window_blocks, int) or self.window_blocks < 1 or self.window_blocks % 2 == 0:
        raise ValueError(f"bigbird window_blocks must be an odd int >= 1 (1, 3, 5, ...), got {self.window_blocks!r}")

  cfg: Config = Config()

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("bigbird", segments, causal)
    return bigbird_attention(q, k, v, segments, cfg=self.cfg, causal=causal)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("bigbird", segments, causal)
    return dense_weights(q, k, bigbird_mask(segments, q.shape[2], cfg=self.cfg, causal=causal))
