"""Reformer LSH attention (Kitaev, Kaiser & Levskaya 2020, "Reformer: The Efficient Transformer",
arXiv:2001.04451, §2), shared-QK, multi-round, with exact round combination.

Shared QK (§2 "Shared-QK Transformer"): keys are the length-normalised queries, k̂_j = q_j / ‖q_j‖, and
    s_ij = q_i·k̂_j / √D.
THE `k` ARGUMENT IS IGNORED (the uniform mixer signature passes one; its gradient is zero).

Hashing (§2 "Locality sensitive hashing"), per head and round r = 1..n_h with a random R^(r) ∈ R^(D × b/2):
    h_r(x) = argmax([x R^(r); −x R^(r)])  ∈ {0, …, b−1}          (b = n_buckets, even; b = 1: one bucket)
R is drawn from N(0, 1) by numpy's legacy RandomState (a stream frozen across NumPy versions, NEP 19) seeded
with (seed, shape) at init and stored in the non-trainable variable collection "lsh"
(variables["lsh"]["hash"]["rotations"], HxRxDx(b/2)). When that collection is absent
(a train state that keeps only "params", an nn.scan that does not carry it) the very same draw is recomputed
from the seed, so results never depend on whether the collection was kept. Replace it to redraw.

Chunked attention within buckets. Per round, the tokens of each (segment, bucket) group, in position order, are
cut into chunks of c consecutive tokens (chunk rank κ_r(j) = ⌊rank of j inside its group / c⌋); query i attends
the tokens of its group in its own chunk and the chunk before:
    P_i^(r) = {j : g_r(j) = g_r(i), κ_r(j) ∈ {κ_r(i) − 1, κ_r(i)}},    g_r(j) = (seg_j, h_r(q_j)),
    P_i = (∪_r P_i^(r)) \\ {i}  ∩ {j ≤ i if causal}.
Rounds are combined as in the paper's multi-round attention (§2), with its duplicate correction m_ij = log N_ij,
N_ij = |{r : j ∈ P_i^(r)}|: o_i = Σ_r e^{z_r(i) − z(i)} o_i^(r), z = log Σ_r e^{z_r}. This makes the result EXACTLY
softmax over the union P_i, which is what `implied_weights` returns. Self-attention: a token attends to itself
only when P_i is empty (then o_i = v_i) — the limit of the paper's m_ii = 10^5 penalty, without the constant.

Implementation (no LxL anywhere): per head and round the tokens are sorted by (group, position) and written into
a slot buffer in which every group starts at a multiple of c (P ≤ L + min(#groups, L)·(c−1) slots, rounded up to
a multiple of c); slot chunk n attends slot chunks n−1 and n (2c keys) under the mask "same group, not itself,
causal". Memory O(n_h·(L + #groups·c)·c) scores plus O(n_h²·(L + #groups·c)·c) booleans for the duplicate
counts, plus the sort. The logit scale 1/√D on q_i·k̂_j is our choice (the paper does not state one).

Deviations from the paper (all deliberate):
  (1) Chunks never mix groups. The paper chunks the single sorted sequence, so a chunk (and "one chunk back") can
      hold tokens of other buckets, and where bucket b's tokens start depends on how many tokens — including
      FUTURE tokens — fell into lower buckets: a query's key set then depends on the future, so the paper's causal
      mode leaks (and packed/padded rows differ from alone). Aligning each group to chunk boundaries makes P_i^(r)
      depend only on the group's earlier tokens: causal is strict, padding and packing are exact, and the pattern
      is closer to the ideal P_i = {j : h(q_i) = h(k_j)} of §2. Cost: up to c−1 empty slots per group.
  (2) No wrap-around: the first chunk of a group has no "previous chunk" (the trax reference code rolls the last
      chunk of the whole sorted sequence in front of the first).
  (3) One fixed draw of R per (seed, head, round), the same for every layer that shares the config (the reference
      implementation draws fresh rotations on every forward pass); the hash gets no gradient (as in the paper).
  (4) k̂ = q / max(‖q‖, 1e-12) (the paper leaves ‖q‖ = 0 undefined).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.attention import check_call, register
from research.attention.blockwise import attend, dense_weights, merge, neighbours
from research.attention.masks import Segments, zero_padding

COLLECTION = "lsh"
HIGHEST = jax.lax.Precision.HIGHEST


def draw_rotations(seed: int, num_heads: int, n_hashes: int, head_dim: int, n_buckets: int) -> jax.Array:
  """R_HxRxDx(b/2) fp32, i.i.d. N(0, 1), a pure function of its arguments (numpy's frozen legacy stream: the same
  on every backend and JAX/NumPy version, and a constant under jit, so nothing to compile)."""
  rng = np.random.RandomState([seed, num_heads, n_hashes, head_dim, n_buckets])
  return jnp.asarray(rng.standard_normal((num_heads, n_hashes, head_dim, n_buckets // 2)), jnp.float32)


def lsh_buckets(q_BxLxHxD: jax.Array, rot_HxRxDxK: jax.Array, n_buckets: int) -> jax.Array:
  """h_r(q) = argmax([qR; −qR]) per head and round: BxHxRxL int32 (all 0 when n_buckets = 1)."""
  b, length, h, _ = q_BxLxHxD.shape
  if n_buckets == 1:
    return jnp.zeros((b, h, rot_HxRxDxK.shape[1], length), jnp.int32)
  proj = jnp.einsum("blhd,hrdk->bhrlk", q_BxLxHxD.astype(jnp.float32), rot_HxRxDxK, precision=HIGHEST)
  return jnp.argmax(jnp.concatenate([proj, -proj], axis=-1), axis=-1).astype(jnp.int32)


def normalize_keys(q_BxLxHxD: jax.Array) -> jax.Array:
  """Shared-QK keys k̂ = q / ‖q‖ (fp32)."""
  q = q_BxLxHxD.astype(jnp.float32)
  return q / jnp.maximum(jnp.linalg.norm(q, axis=-1, keepdims=True), 1e-12)


def num_slots(length: int, n_groups: int, chunk: int) -> int:
  """Static slot-buffer size: every group padded to a multiple of `chunk`."""
  return -(-(length + min(n_groups, length) * (chunk - 1)) // chunk) * chunk


def groups(buckets_BxHxRxL: jax.Array, segments: Segments, n_buckets: int) -> jax.Array:
  """g_r(j) = (seg_j − 1)·b + h_r(j) for valid tokens; padding -> max_segments·b (sorted last, never attended)."""
  seg_Bx1x1xL = segments.segment_ids[:, None, None, :]
  return jnp.where(seg_Bx1x1xL > 0, (seg_Bx1x1xL - 1) * n_buckets + buckets_BxHxRxL, segments.max_segments * n_buckets)


def layout(group_XxL: jax.Array, chunk: int, pad_group: int, slots: int):
  """Sort each row by (group, position) into a slot buffer with every group aligned to `chunk`.

  Returns slot_XxL (slot of each token; >= `slots` for padding), crank_XxL (chunk rank inside its group) and
  token_XxP (token of each slot, −1 for an empty slot).
  """

  def one(group_L):
    length = group_L.shape[0]
    i_L = jnp.arange(length, dtype=jnp.int32)
    g_L, order_L = jax.lax.sort((group_L, i_L), num_keys=1)  # stable: by group, then position
    start_L = jax.lax.cummax(jnp.where(jnp.concatenate([jnp.ones(1, bool), g_L[1:] != g_L[:-1]]), i_L, 0))
    rank_L = i_L - start_L
    chunk_L = jnp.cumsum(rank_L % chunk == 0, dtype=jnp.int32) - 1  # chunks used so far (each starts at rank ≡ 0)
    slot_sorted_L = jnp.where(g_L < pad_group, chunk_L * chunk + rank_L % chunk, slots + i_L)  # padding: unique, >= P
    token_P = jnp.full(slots, -1, jnp.int32).at[slot_sorted_L].set(order_L, mode="drop", unique_indices=True)
    _, slot_L, crank_L = jax.lax.sort((order_L, slot_sorted_L, rank_L // chunk), num_keys=1)  # back to token order
    return slot_L, crank_L, token_P

  lead = group_XxL.shape[:-1]
  flat = jax.vmap(one)(group_XxL.reshape(-1, group_XxL.shape[-1]))
  return tuple(x.reshape(*lead, x.shape[-1]) for x in flat)


def _hash_layout(q_BxLxHxD, segments: Segments, rot_HxRxDxK, cfg):
  group_BxHxRxL = groups(lsh_buckets(q_BxLxHxD, rot_HxRxDxK, cfg.n_buckets), segments, cfg.n_buckets)
  pad_group = segments.max_segments * cfg.n_buckets
  slots = num_slots(q_BxLxHxD.shape[1], pad_group, cfg.chunk_size)
  slot, crank, token = layout(group_BxHxRxL, cfg.chunk_size, pad_group, slots)
  return group_BxHxRxL, slot, crank, token, pad_group


def reformer_attention(q_BxLxHxD, v_BxLxHxD, segments: Segments, rot_HxRxDxK, *, cfg, causal: bool) -> jax.Array:
  b, length, h, d = q_BxLxHxD.shape
  c, r = cfg.chunk_size, cfg.n_hashes
  group_BxHxRxL, slot_BxHxRxL, crank_BxHxRxL, token_BxHxRxP, _ = _hash_layout(q_BxLxHxD, segments, rot_HxRxDxK, cfg)
  p = token_BxHxRxP.shape[-1]
  nc = p // c
  filled_BxHxRxP = token_BxHxRxP >= 0
  tok_BxHxRxP = jnp.maximum(token_BxHxRxP, 0)
  bi = jnp.arange(b)[:, None, None, None]
  hi = jnp.arange(h)[None, :, None, None]
  ri = jnp.arange(r)[None, None, :, None]

  # into the slot buffer: one gather for (q, k̂, v), one for the metadata (position; every round's group and chunk
  # rank, the latter for the duplicate counts N_ij)
  f32 = jnp.float32
  data_BxLxHx3D = jnp.concatenate([q_BxLxHxD.astype(f32), normalize_keys(q_BxLxHxD), v_BxLxHxD.astype(f32)], -1)
  data_s = jnp.transpose(data_BxLxHx3D, (0, 2, 1, 3))[bi, hi, tok_BxHxRxP].reshape(b, h, r, nc, c, 3 * d)
  meta_BxHxLx2R = jnp.concatenate([jnp.moveaxis(group_BxHxRxL, 2, 3), jnp.moveaxis(crank_BxHxRxL, 2, 3)], -1)
  meta_s = jnp.concatenate([token_BxHxRxP[..., None], meta_BxHxLx2R[bi, hi, tok_BxHxRxP]], -1)
  meta_s = jnp.where(filled_BxHxRxP[..., None], meta_s, -1).reshape(b, h, r, nc, c, 1 + 2 * r)

  # keys: own slot chunk and the one before (empty slots: position -1)
  kv2 = neighbours(data_s[..., d:], 3, (-1, 0))
  meta2 = neighbours(meta_s, 3, (-1, 0), fill=-1)
  pos_q, pos_k = meta_s[..., 0][..., :, None], meta2[..., 0][..., None, :]  # ...xCx1, ...x1x2C
  g_q, g_k = meta_s[..., None, 1 : 1 + r], meta2[..., None, :, 1 : 1 + r]  # ...xCx1xR, ...x1x2CxR
  c_q, c_k = meta_s[..., None, 1 + r :], meta2[..., None, :, 1 + r :]
  same_CxKxR = g_q == g_k
  own_round = jnp.eye(r, dtype=bool)[:, None, None, None, :]  # RxNcxCx2CxR': this buffer's round r vs r'
  mask = jnp.any(same_CxKxR & own_round, axis=-1) & (pos_k >= 0) & (pos_k != pos_q)
  if causal:
    mask &= pos_k <= pos_q
  dc = c_k - c_q
  n_ij = jnp.sum(same_CxKxR & ((dc == 0) | (dc == -1)), axis=-1)
  bias = -jnp.log(jnp.maximum(n_ij, 1).astype(f32))
  o_s, lse_s = attend(data_s[..., :d], kv2[..., :d], kv2[..., d:], mask, bias)  # BxHxRxNcxCxD, BxHxRxNcxC

  # back to token order (one gather), then combine the rounds
  res_BxHxRxPxD1 = jnp.concatenate([o_s, lse_s[..., None]], -1).reshape(b, h, r, p, d + 1)
  res_BxHxRxLxD1 = res_BxHxRxPxD1[bi, hi, ri, jnp.minimum(slot_BxHxRxL, p - 1)]
  o_BxHxRxLxD = res_BxHxRxLxD1[..., :d]
  lse_BxHxRxL = jnp.where(slot_BxHxRxL < p, res_BxHxRxLxD1[..., d], -jnp.inf)
  o_BxHxLxD, lse_BxHxL = merge(jnp.moveaxis(o_BxHxRxLxD, 2, 0), jnp.moveaxis(lse_BxHxRxL, 2, 0))
  alone_BxHxL = jnp.isneginf(lse_BxHxL) & segments.valid[:, None, :]  # nothing else: attend to itself
  v_BxHxLxD = jnp.transpose(v_BxLxHxD, (0, 2, 1, 3)).astype(f32)
  o_BxHxLxD = jnp.where(alone_BxHxL[..., None], v_BxHxLxD, o_BxHxLxD)
  return zero_padding(jnp.transpose(o_BxHxLxD, (0, 2, 1, 3)).astype(q_BxLxHxD.dtype), segments)


def reformer_mask(q_BxLxHxD, segments: Segments, rot_HxRxDxK, *, cfg, causal: bool) -> jax.Array:
  """Dense BxHxLxL union ∪_r P_i^(r) \\ {i} (causal) from the same buckets (oracle only)."""
  group_BxHxRxL, _, crank_BxHxRxL, _, pad_group = _hash_layout(q_BxLxHxD, segments, rot_HxRxDxK, cfg)
  same = (group_BxHxRxL[..., :, None] == group_BxHxRxL[..., None, :]) & (group_BxHxRxL[..., :, None] < pad_group)
  dc = crank_BxHxRxL[..., None, :] - crank_BxHxRxL[..., :, None]
  union_BxHxLxL = jnp.any(same & ((dc == 0) | (dc == -1)), axis=2)
  length = q_BxLxHxD.shape[1]
  union_BxHxLxL &= ~jnp.eye(length, dtype=bool)
  if causal:
    union_BxHxLxL &= jnp.tril(jnp.ones((length, length), bool))
  return union_BxHxLxL


class Rotations(nn.Module):
  """R in the non-trainable collection "lsh", drawn from `seed` at init; recomputed from `seed` when absent."""

  seed: int
  n_hashes: int
  n_buckets: int

  @nn.compact
  def __call__(self, num_heads: int, head_dim: int) -> jax.Array:
    shape = (num_heads, self.n_hashes, head_dim, self.n_buckets // 2)
    draw = lambda: draw_rotations(self.seed, num_heads, self.n_hashes, head_dim, self.n_buckets)  # noqa: E731
    if not (self.is_mutable_collection(COLLECTION) or self.has_variable(COLLECTION, "rotations")):
      return draw()
    rot = self.variable(COLLECTION, "rotations", draw).value
    if rot.shape != shape:
      raise ValueError(f"reformer rotations have shape {rot.shape}, expected {shape} (heads, n_hashes, D, b/2)")
    return rot


@register(
  "reformer",
  supports_causal=True,
  supports_packing=True,
  length_invariant=True,
  positions=("learned", "rope"),
  complexity="O(N n_h c d + N log N)",
  state_size=lambda L, H, D: 4 * H * 2 * (L + 8 * 7) * 2 * 8,  # score tiles, defaults n_h = 2, b = 8, c = 8
  paper="Kitaev et al. 2020, arXiv:2001.04451",
)
class ReformerAttention(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    n_hashes: int = 2  # rounds (paper: 1..8)
    n_buckets: int = 8  # b: even, or 1 (no hashing)
    chunk_size: int = 8  # c (paper: 64)
    seed: int = 0  # the random rotations

    def __post_init__(self):
      for name, lo in (("n_hashes", 1), ("n_buckets", 1), ("chunk_size", 1), ("seed", 0)):
        value = getattr(self, name)
        if not isinstance(value, int) or value < lo:
          raise ValueError(f"reformer {name} must be an int >= {lo}, got {value!r}")
      if self.n_buckets != 1 and self.n_buckets % 2:
        raise ValueError(f"reformer n_buckets must be 1 or even (argmax over [xR; -xR]), got {self.n_buckets}")

  cfg: Config = Config()

  def setup(self):
    self.hash = Rotations(self.cfg.seed, self.cfg.n_hashes, self.cfg.n_buckets)

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    """k is ignored: shared-QK attention uses k̂ = q / ‖q‖ (see the module docstring)."""
    check_call("reformer", segments, causal)
    rot = self.hash(q.shape[2], q.shape[3])
    return reformer_attention(q, v, segments, rot, cfg=self.cfg, causal=causal)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    rot = self.hash(q.shape[2], q.shape[3])
    union_BxHxLxL = reformer_mask(q, segments, rot, cfg=self.cfg, causal=causal)
    weights = dense_weights(q, normalize_keys(q), union_BxHxLxL)
    alone_BxHxL = ~jnp.any(union_BxHxLxL, axis=-1) & segments.valid[:, None, :]
    return weights + alone_BxHxL[..., None] * jnp.eye(q.shape[1], dtype=jnp.float32)
