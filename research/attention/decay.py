"""Decayed linear attention: the shared core of RetNet's retention and Gated Linear Attention.

    S_t = diag(exp(g_t)) S_{t-1} + k_tᵀ v_t,      o_t = q_t S_t,      g_t ≤ 0 (log-decay, -inf allowed)

unrolled:  o_i = Σ_{j≤i} Σ_f q_{i,f} k_{j,f} exp(Σ_{j<r≤i} g_{r,f}) v_j.

`g` is one value per head (BxLxHx1: RetNet, arXiv:2307.08621, g = log γ_h) or one per key dimension
(BxLxHxF: GLA, arXiv:2312.06635, g = log α_t). Three causal forms compute the same thing: "parallel"
(materialized LxL), "recurrent" (one token per scan step) and "chunked" (exact attention inside chunks of C
tokens, the F×D state carried across chunks).

Numerics. Every decay factor is exp of a SUM of log-decays over a range of tokens ("segment sum",
Σ_{j<r≤i} g_r, computed as a masked cumulative sum), never the ratio of two cumulative products
exp(b_i) / exp(b_j) nor the difference b_i - b_j of two prefix sums. Every exponent is therefore ≤ 0: nothing
overflows however small the gates are, and a factor that underflows to 0 is the right limit. With per-dimension
decays the chunk is split once more into sub-chunks of c tokens (GLA's secondary chunking): inside a sub-chunk
the decay is the pairwise c×c×F segment sum; between sub-chunks j < i it factorises into three non-positive
exponents, (sum within i up to t) + (sum of the sub-chunks strictly between) + (sum within j after s), so the
bulk is a plain matmul.

Padding and packing: a log-decay of -inf at a token forgets everything before it. Callers put -inf at the first
token of every segment (at the last one for the backward direction) and zero q, k, v at padding, so the state
stays F×D per head however many segments share a row (`segment_log_decay`).

Bidirectional (causal=False): a forward causal pass plus a backward causal pass over the reversed sequence that
excludes the diagonal, so the j = i term is counted exactly once (no subtraction). The exclusive backward output
is the inclusive one shifted by a token, with queries q̂_{t-1} = q_t ⊙ exp(g_t), so both directions run as ONE
inclusive causal pass over a 2B batch:
    o_i = Σ_{j≤i} q_i·(k_j ⊙ exp(Σ_{j<r≤i} g_r)) v_j + Σ_{j>i} q_i·(k_j ⊙ exp(Σ_{i≤r<j} g_r)) v_j
(a token's gate decays everything that lies beyond it as seen from the query, in both directions).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.attention.linear import CAUSAL_FORMS
from research.attention.masks import Segments, attention_mask

FORMS = CAUSAL_FORMS  # one definition of the three forms, shared with the linear family


# ----------------------------------------------------------------------------------------------------------------
# Segment sums
# ----------------------------------------------------------------------------------------------------------------


def segsum(x_XxN: jax.Array) -> jax.Array:
  """out[..., i, j] = Σ_{j<r≤i} x_r for j ≤ i (0 elsewhere), as a masked cumulative sum: no subtraction."""
  n = x_XxN.shape[-1]
  r_N, j_N = jnp.arange(n)[:, None], jnp.arange(n)[None, :]
  x_XxNxN = jnp.where(r_N > j_N, x_XxN[..., :, None], 0.0)  # [r, j] = x_r for r > j
  return jnp.cumsum(x_XxNxN, axis=-2)


def decay_matrix(x_XxN: jax.Array, strict: bool = False) -> jax.Array:
  """exp(segsum(x)) on the lower triangle (strictly below the diagonal if `strict`), exact 0 above."""
  n = x_XxN.shape[-1]
  mask_NxN = jnp.tril(jnp.ones((n, n), bool), -1 if strict else 0)
  s_XxNxN = jnp.where(mask_NxN, segsum(x_XxN), 0.0)  # masked before exp: no inf, no NaN in either direction
  return jnp.where(mask_NxN, jnp.exp(s_XxNxN), 0.0)


def _suffix_exclusive(g: jax.Array, axis: int) -> jax.Array:
  """Σ_{r>s} g_r along `axis` (0 at the last index)."""
  inclusive = jnp.flip(jnp.cumsum(jnp.flip(g, axis), axis=axis), axis)
  tail = jax.lax.slice_in_dim(inclusive, 1, g.shape[axis], axis=axis)
  return jnp.concatenate([tail, jnp.zeros_like(jax.lax.slice_in_dim(g, 0, 1, axis=axis))], axis=axis)


# ----------------------------------------------------------------------------------------------------------------
# Cores
# ----------------------------------------------------------------------------------------------------------------


def _zero_state(k_BxLxHxF: jax.Array, v_BxLxHxD: jax.Array) -> jax.Array:
  b, _, h, f = k_BxLxHxF.shape
  return jnp.zeros((b, h, f, v_BxLxHxD.shape[-1]), jnp.float32)


def decay_attention(
  q_BxLxHxF: jax.Array,
  k_BxLxHxF: jax.Array,
  v_BxLxHxD: jax.Array,
  g_BxLxHxG: jax.Array,
  *,
  causal: bool,
  form: str = "chunked",
  chunk_size: int = 64,
  sub_chunk_size: int = 16,
  initial_state: jax.Array | None = None,
  g_backward_BxLxHxG: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Decayed linear attention in fp32; returns (out_BxLxHxD, final forward state s_BxHxFxD).

  g has G = 1 (one decay per head) or G = F (one per key dimension, chunked with sub-chunks of `sub_chunk_size`).
  `initial_state` (causal only) streams a sequence over several calls. For causal=False, `g_backward` (default: g)
  is the log-decay of the backward direction, indexed like the input (it differs from g only where segments reset).
  """
  if form not in FORMS:
    raise ValueError(f"unknown causal form {form!r}; choose one of {', '.join(FORMS)}")
  if g_BxLxHxG.shape[-1] not in (1, q_BxLxHxF.shape[-1]):
    raise ValueError(f"log-decay has {g_BxLxHxG.shape[-1]} values per head; expected 1 or {q_BxLxHxF.shape[-1]}")
  per_dim = g_BxLxHxG.shape[-1] != 1
  if chunk_size <= 0 or (per_dim and (sub_chunk_size <= 0 or chunk_size % sub_chunk_size)):
    raise ValueError(f"chunk_size={chunk_size} must be a positive multiple of sub_chunk_size={sub_chunk_size}")
  q, k, v, g = (x.astype(jnp.float32) for x in (q_BxLxHxF, k_BxLxHxF, v_BxLxHxD, g_BxLxHxG))

  def run(q, k, v, g, state):
    if form == "parallel":
      return _causal_parallel(q, k, v, g, state)
    if form == "recurrent":
      return _causal_recurrent(q, k, v, g, state)
    return _causal_chunked(q, k, v, g, state, chunk_size, sub_chunk_size)

  if causal:
    state = initial_state.astype(jnp.float32) if initial_state is not None else _zero_state(k, v)
    return run(q, k, v, g, state)
  if initial_state is not None:
    raise ValueError("initial_state streams a causal sequence; it has no meaning for causal=False")
  # Backward direction = a causal pass over the reversed sequence WITHOUT its diagonal. The exclusive output
  # q_t·(diag(α_t) S_{t-1}) is the inclusive output one step earlier for the query q̂_{t-1} = q_t ⊙ α_t, so both
  # directions run as one inclusive pass over a 2B batch and the j = i term is counted exactly once.
  g_bwd = g if g_backward_BxLxHxG is None else g_backward_BxLxHxG.astype(jnp.float32)
  q_rev, k_rev, v_rev, g_rev = (jnp.flip(x, axis=1) for x in (q, k, v, g_bwd))
  q_hat = _shift(q_rev * jnp.exp(g_rev), -1)
  both = (jnp.concatenate(pair, axis=0) for pair in ((q, q_hat), (k, k_rev), (v, v_rev), (g, g_rev)))
  out_2BxLxHxD, final_2BxHxFxD = run(*both, _zero_state(jnp.concatenate([k, k]), v))
  b = q.shape[0]
  return out_2BxLxHxD[:b] + jnp.flip(_shift(out_2BxLxHxD[b:], 1), axis=1), final_2BxHxFxD[:b]


def _shift(x_BxLx: jax.Array, by: int) -> jax.Array:
  """Shift along L by `by` (+1: out[t] = x[t-1]; -1: out[t] = x[t+1]), filling with zeros."""
  pad = [(0, 0)] * x_BxLx.ndim
  if by > 0:
    pad[1] = (by, 0)
    return jnp.pad(x_BxLx[:, :-by], pad)
  pad[1] = (0, -by)
  return jnp.pad(x_BxLx[:, -by:], pad)


def _causal_parallel(q, k, v, g, state):
  """Materialized O(L²·G): the decay matrix from one LxL segment sum per head (and key dimension)."""
  decay_BxHxGxLxL = decay_matrix(jnp.moveaxis(g, 1, -1))
  if g.shape[-1] == 1:
    a_BxHxLxL = jnp.einsum("blhf,bshf->bhls", q, k) * decay_BxHxGxLxL[:, :, 0]
  else:
    a_BxHxLxL = jnp.einsum("blhf,bshf,bhfls->bhls", q, k, decay_BxHxGxLxL)
  out = jnp.einsum("bhls,bshd->blhd", a_BxHxLxL, v)
  out = out + jnp.einsum("blhf,bhfd->blhd", q * jnp.exp(jnp.cumsum(g, axis=1)), state)
  final = jnp.exp(jnp.sum(g, axis=1))[..., None] * state
  final = final + jnp.einsum("bshf,bshd->bhfd", k * jnp.exp(_suffix_exclusive(g, 1)), v)
  return out, final


def _causal_recurrent(q, k, v, g, state):
  """The RNN form: S_t = diag(exp(g_t)) S_{t-1} + k_tᵀ v_t, one token per scan step, F×D state."""

  def step(s_BxHxFxD, xs):
    q_BxHxF, k_BxHxF, v_BxHxD, g_BxHxG = xs
    s_BxHxFxD = jnp.exp(g_BxHxG)[..., None] * s_BxHxFxD + k_BxHxF[..., None] * v_BxHxD[..., None, :]
    return s_BxHxFxD, jnp.einsum("bhf,bhfd->bhd", q_BxHxF, s_BxHxFxD)

  xs = tuple(jnp.swapaxes(x, 0, 1) for x in (q, k, v, g))
  final, out_LxBxHxD = jax.lax.scan(step, state, xs)
  return jnp.swapaxes(out_LxBxHxD, 0, 1), final


def _causal_chunked(q, k, v, g, state, chunk_size, sub_chunk_size):
  """Chunks of C tokens: intra-chunk attention for all chunks at once, a scan over chunk states only."""
  b, length, h, _ = q.shape
  per_dim = g.shape[-1] != 1
  sub = sub_chunk_size if per_dim else 1
  c = min(chunk_size, -(-length // sub) * sub)  # a multiple of sub (chunk_size is one)
  pad = -length % c
  if pad:  # zero q, k, v and no decay: padded tokens change nothing and are sliced off
    q, k, v, g = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (q, k, v, g))
  n = (length + pad) // c
  q, k, v, g = (x.reshape(b, n, c, h, x.shape[-1]) for x in (q, k, v, g))  # BxNxCxHx·

  if per_dim:
    a_BxNxHxCxC = _intra_chunk_per_dim(q, k, g, sub)
  else:
    decay_BxNxHxCxC = decay_matrix(jnp.moveaxis(g[..., 0], 2, -1))
    a_BxNxHxCxC = jnp.einsum("bnthf,bnshf->bnhts", q, k) * decay_BxNxHxCxC
  out_BxNxCxHxD = jnp.einsum("bnhts,bnshd->bnthd", a_BxNxHxCxC, v)

  # What each chunk adds to the state (decayed to the chunk's end), and its total decay.
  u_BxNxHxFxD = jnp.einsum("bnshf,bnshd->bnhfd", k * jnp.exp(_suffix_exclusive(g, 2)), v)
  total_BxNxHxG = jnp.sum(g, axis=2)

  def step(s_BxHxFxD, xs):
    total_BxHxG, u_BxHxFxD = xs
    return jnp.exp(total_BxHxG)[..., None] * s_BxHxFxD + u_BxHxFxD, s_BxHxFxD

  xs = (jnp.moveaxis(total_BxNxHxG, 1, 0), jnp.moveaxis(u_BxNxHxFxD, 1, 0))
  final, starts_NxBxHxFxD = jax.lax.scan(step, state, xs)
  q_decayed = q * jnp.exp(jnp.cumsum(g, axis=2))  # decay from the chunk start through t (inclusive)
  out_BxNxCxHxD = out_BxNxCxHxD + jnp.einsum("bnthf,nbhfd->bnthd", q_decayed, starts_NxBxHxFxD)
  return out_BxNxCxHxD.reshape(b, n * c, h, -1)[:, :length], final


def _intra_chunk_per_dim(q, k, g, sub):
  """Intra-chunk scores BxNxHxCxC for per-dimension decays, every exponent ≤ 0.

  Query t in sub-chunk i, key s in sub-chunk j:
    i = j: Σ_f q_tf k_sf exp(Σ_{s<r≤t} g_rf)                                  pairwise, c×c×F
    j < i: Σ_f [q_tf exp(Σ_{r≤t in i} g_rf)] exp(Σ_{j<m<i} T_mf) [k_sf exp(Σ_{r>s in j} g_rf)]     matmuls
  (T_m = Σ of g over sub-chunk m).
  """
  b, n, c, h, f = q.shape
  m = c // sub
  q_s, k_s, g_s = (x.reshape(b, n, m, sub, h, f) for x in (q, k, g))  # BxNxMxcxHxF

  diag_BxNxMxHxFxcxc = decay_matrix(jnp.moveaxis(g_s, 3, -1))
  diag_BxNxMxHxcxc = jnp.einsum("bnmthf,bnmshf,bnmhfts->bnmhts", q_s, k_s, diag_BxNxMxHxFxcxc)
  if m == 1:
    return diag_BxNxMxHxcxc[:, :, 0]

  q_hat = q_s * jnp.exp(jnp.cumsum(g_s, axis=3))
  k_hat = k_s * jnp.exp(_suffix_exclusive(g_s, 3))
  between_BxNxHxFxMxM = decay_matrix(jnp.moveaxis(jnp.sum(g_s, axis=3), 2, -1))  # [i, j]: exp(Σ_{j<m'≤i} T)
  between_BxNxHxFxMxM = jnp.pad(between_BxNxHxFxMxM[..., :-1, :], [(0, 0)] * 4 + [(1, 0), (0, 0)])  # row i ← i-1
  off_BxNxHxMxcxMxc = jnp.einsum("bnithf,bnhfij,bnjshf->bnhitjs", q_hat, between_BxNxHxFxMxM, k_hat)
  full = off_BxNxHxMxcxMxc + jnp.einsum("bnihts,ij->bnhitjs", diag_BxNxMxHxcxc, jnp.eye(m, dtype=q.dtype))
  return full.reshape(b, n, h, c, c)


# ----------------------------------------------------------------------------------------------------------------
# Segments
# ----------------------------------------------------------------------------------------------------------------


def segment_log_decay(g_BxLxHxG: jax.Array, segments: Segments, reverse: bool = False) -> jax.Array:
  """Log-decay with packing resets: -inf at each segment's first token (last token if `reverse`), 0 at padding."""
  ids_BxL = segments.segment_ids
  neighbour_BxL = jnp.pad(ids_BxL[:, 1:], ((0, 0), (0, 1))) if reverse else jnp.pad(ids_BxL[:, :-1], ((0, 0), (1, 0)))
  reset_BxL = segments.valid & (ids_BxL != neighbour_BxL)
  g = jnp.where(segments.valid[:, :, None, None], g_BxLxHxG.astype(jnp.float32), 0.0)
  return jnp.where(reset_BxL[:, :, None, None], -jnp.inf, g)


def mask_padding(x_BxLxHxD: jax.Array, segments: Segments) -> jax.Array:
  return jnp.where(segments.valid[:, :, None, None], x_BxLxHxD, 0.0).astype(x_BxLxHxD.dtype)


def segment_positions(segments: Segments) -> tuple[jax.Array, jax.Array]:
  """(position inside its segment, length of its segment), BxL int32 each, computed from the ids (0 at padding)."""
  onehot_BxLxG = segments.one_hot(jnp.int32)
  position_BxL = jnp.sum(onehot_BxLxG * jnp.cumsum(onehot_BxLxG, axis=1), axis=-1) - 1
  length_BxL = jnp.einsum("blg,bg->bl", onehot_BxLxG, jnp.sum(onehot_BxLxG, axis=1))
  return jnp.where(segments.valid, position_BxL, 0), length_BxL


def gated_weights(q_BxLxHxD, k_BxLxHxD, g_BxLxHxD, segments: Segments, *, causal: bool) -> jax.Array:
  """Implied fp32 weights BxHxLxL of per-dimension decays, straight from the definition (no resets, no chunks):

      A_ij = Σ_d q_id k_jd Π_{j<r≤i} α_rd  (j ≤ i),    A_ij = Σ_d q_id k_jd Π_{i≤r<j} α_rd  (j > i, bidirectional)

  restricted to i, j in the same segment (the products then only span that segment).
  """
  q, k = (x.astype(jnp.float32) for x in (q_BxLxHxD, k_BxLxHxD))
  g_BxHxDxL = jnp.moveaxis(jnp.where(segments.valid[:, :, None, None], g_BxLxHxD.astype(jnp.float32), 0.0), 1, -1)
  decay = decay_matrix(g_BxHxDxL)
  if not causal:  # [i, j] for j > i: the forward matrix of the reversed sequence, flipped back
    decay = decay + jnp.flip(decay_matrix(jnp.flip(g_BxHxDxL, -1), strict=True), (-2, -1))
  a = jnp.einsum("blhd,bshd,bhdls->bhls", q, k, decay, precision=jax.lax.Precision.HIGHEST)
  return jnp.where(attention_mask(segments, causal), a, 0.0)


# ----------------------------------------------------------------------------------------------------------------
# Output normalisation
# ----------------------------------------------------------------------------------------------------------------


class HeadNorm(nn.Module):
  """Per token and head over D: GroupNorm with one group per head (`centered`, scale and bias) or RMSNorm (scale).

  Statistics never mix tokens, so padding and packing stay exact. Computes in fp32 and returns fp32.
  """

  centered: bool
  eps: float

  @nn.compact
  def __call__(self, x_BxLxHxD: jax.Array) -> jax.Array:
    h, d = x_BxLxHxD.shape[-2:]
    x = x_BxLxHxD.astype(jnp.float32)
    if self.centered:
      x = x - jnp.mean(x, axis=-1, keepdims=True)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("heads", "kv")), (h, d))
    x = x * scale
    if self.centered:
      x = x + self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("heads", "kv")), (h, d))
    return x
