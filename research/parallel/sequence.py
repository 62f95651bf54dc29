"""Sequence-parallel attention: the length L split over one mesh axis ("seq") with `jax.shard_map`.

    out_BxLxHxD = sequence_parallel_attention(name, q, k, v, segments, mesh=mesh, causal=..., variables=...)

equals the registered mixer's own output, `build(name, config).apply(variables, q, k, v, segments, causal)`, up to
fp32 rounding, packed rows included (segment ids are global per row, so a sequence may cross shard boundaries).
Every shard runs the variant's own shard-local code (its feature maps, gates, output norm) and the family's core;
what crosses shards is per-family state, never the other shards' tokens (except softmax's K/V):

  * bidirectional linear family (linear, hedgehog, based, cosformer, performer): the core's state
    S = (Σ φ̃(k)ᵀv, Σ φ̃(k)) summed over shards with a psum. The features are segment-expanded,
    φ̃ = onehot(segment) ⊗ φ, so S holds one block per segment and a shard writes only the blocks of the segments it
    holds: the psum adds each segment's block over exactly the shards that hold it (a psum of unexpanded φ(K)ᵀV
    would mix the packed sequences).
  * causal linear family: shard i starts the causal core from the exclusive prefix Σ_{i'<i} S_{i'} (a log-step
    ppermute scan, `collectives.exclusive_scan`).
  * performer's softmax kernel: the key stabiliser μ is a max over each segment's keys (running max when causal):
    a pmax (exclusive max-scan when causal) of per-segment maxima; keys move to the global μ, queries to the global
    key sums, and the causal state (kv, z, r) composes in the larger reference.
  * decay family (retention, gla): each shard's (total log-decay, final state) pair, composed by an exclusive scan,
    (T, S) ∘ (T', S') = (T + T', e^{T'} S + S'); bidirectional adds the mirrored reverse scan. Packing resets
    (log-decay −inf at a segment's first/last token) see the neighbouring shard's id through a one-token halo.
  * softmax: "ring" rotates K/V with ppermute around the axis (n steps, online softmax, O(L/n) keys per step) or
    "allgather" gathers K/V once (O(L) keys per shard, one materialised block).

Position-dependent pieces read global positions: cosformer's segment length M and retention's decay normaliser
come from per-segment token counts (scan + psum), based's sliding window gets a halo of window−1 tokens.

Covered: softmax (both modes), linear, performer (softmax and relu kernels), hedgehog, based (with or without its
window, window − 1 ≤ L/n), cosformer, retention, gla; causal and bidirectional; every causal form of each core (it
runs per shard). Not covered (a ValueError names the supported variants): local, longformer, bigbird, blockwise,
reformer (need halos / global tokens / hashing across shards), linformer, synthesizer, nystromformer, fnet
(length-sized parameters or global mixing over L); cross-attention (k, v as long as q only); load balancing of the
causal ring (every shard does every step; future blocks are masked, not skipped).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from research.attention import build, check_call
from research.attention.based import taylor_features, window_correction, with_window
from research.attention.decay import decay_attention, mask_padding, segment_log_decay
from research.attention.linear import linear_attention, segment_features
from research.attention.masks import Segments, zero_padding
from research.attention.performer import NEG, QUERY_FLOOR, causal_key_sums, stabilised_causal_attention
from research.attention.retention import log_gammas
from research.attention.softmax import materialized_attention
from research.parallel.collectives import (
  exclusive_scan,
  halo_segments,
  segment_max,
  segment_positions,
  with_halo,
)

SOFTMAX_MODES = ("ring", "allgather")


def _add(a, b):
  return jax.tree.map(jnp.add, a, b)


# ----------------------------------------------------------------------------------------------------------------
# Linear family
# ----------------------------------------------------------------------------------------------------------------


def linear_attention_sp(
  phi_q_BxLxHxF: jax.Array,
  phi_k_BxLxHxF: jax.Array,
  v_BxLxHxD: jax.Array,
  axis: str,
  *,
  causal: bool,
  eps: float | None = 1e-6,
  form: str = "chunked",
  chunk_size: int = 64,
  initial_state: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
  """`linear.linear_attention` over features (segment-expanded) of a sequence split along `axis`.

  Shard i's keys sum to S_i = (Σ φ̃(k)ᵀv, Σ φ̃(k)). Bidirectional: every query reads Σ_i S_i (psum); causal: shard i
  runs the causal core from Σ_{i'<i} S_{i'}. `initial_state` (e.g. based's constant block) is added once.
  """
  _, local = linear_attention(phi_q_BxLxHxF[:, :0], phi_k_BxLxHxF, v_BxLxHxD, causal=False)  # no queries: S_i
  if causal:
    state = exclusive_scan(_add, local, jax.tree.map(jnp.zeros_like, local), axis)
  else:
    state = jax.lax.psum(local, axis)
  if initial_state is not None:
    state = _add(initial_state, state)
  if causal:
    out, _ = linear_attention(
      phi_q_BxLxHxF,
      phi_k_BxLxHxF,
      v_BxLxHxD,
      causal=True,
      eps=eps,
      form=form,
      chunk_size=chunk_size,
      initial_state=state,
    )
  else:  # no keys: the queries read the global state, which already holds this shard's keys
    out, _ = linear_attention(
      phi_q_BxLxHxF, phi_k_BxLxHxF[:, :0], v_BxLxHxD[:, :0], causal=False, eps=eps, initial_state=state
    )
  return out


# ----------------------------------------------------------------------------------------------------------------
# Performer's stabilised softmax kernel
# ----------------------------------------------------------------------------------------------------------------

StabilisedState = tuple[jax.Array, jax.Array, jax.Array]  # (kv_BxHxFxD, z_BxHxF, r_BxHxF), as in performer.py


def _rescale_queries(phi_q_BxLxHxF: jax.Array, z_BxLxHxF: jax.Array) -> jax.Array:
  """φ(q_i) / s_i, s_i = max_f φ(q_i)_f Z_if (stop-gradient), as `favor_features` does with the global key sums Z.
  Any positive per-query scale already on φ(q_i) (the shard-local s_i) cancels."""
  s_BxLxH = jax.lax.stop_gradient(jnp.max(phi_q_BxLxHxF * z_BxLxHxF, axis=-1))
  return phi_q_BxLxHxF / jnp.maximum(s_BxLxH, QUERY_FLOOR)[..., None]


def _stabilised_state(phi_k_BxLxHxF, ref_BxLxH, v_BxLxHxD) -> StabilisedState:
  """The shard's keys as a state in the reference r_f = max of the refs writing column f (NEG: none)."""
  col_ref_BxLxHxF = jnp.where(phi_k_BxLxHxF > 0, ref_BxLxH[..., None], NEG)
  r_BxHxF = jnp.max(col_ref_BxLxHxF, axis=1)
  k_w_BxLxHxF = phi_k_BxLxHxF * jnp.exp(col_ref_BxLxHxF - r_BxHxF[:, None])
  return jnp.einsum("blhf,blhd->bhfd", k_w_BxLxHxF, v_BxLxHxD), jnp.sum(k_w_BxLxHxF, axis=1), r_BxHxF


def _merge_stabilised(a: StabilisedState, b: StabilisedState) -> StabilisedState:
  """Keys of a, then keys of b, in the larger reference r* = max(r_a, r_b): kv = kv_a e^(r_a−r*) + kv_b e^(r_b−r*)."""
  (kv_a, z_a, r_a), (kv_b, z_b, r_b) = a, b
  r = jnp.maximum(r_a, r_b)
  w_a, w_b = jnp.exp(r_a - r), jnp.exp(r_b - r)
  return kv_a * w_a[..., None] + kv_b * w_b[..., None], z_a * w_a + z_b * w_b, r


def favor_attention_sp(
  phi_q_BxLxHxF,
  phi_k_BxLxHxF,
  ref_BxLxH,
  v_BxLxHxD,
  segments: Segments,
  axis: str,
  *,
  causal: bool,
  eps: float,
  form: str = "chunked",
  chunk_size: int = 64,
) -> jax.Array:
  """Performer's softmax kernel across shards, from the shard-local `favor_features` (φ̃(q), φ̃(k), μ).

  μ_local is the key stabiliser of the shard's part of each segment; the global μ is its max over all shards
  (bidirectional) or over this and the earlier shards (causal). Keys move to it, φ̂(k_j) ← φ̂(k_j) e^(μ_local − μ) ≤
  φ̂(k_j); queries are rescaled to the key sums Z_i they read across shards. Bidirectional is then the linear family;
  causal continues from the exclusive scan of the shards' stabilised states (`_merge_stabilised`), and query i reads
  the earlier shards' key sums as z0 e^(min(r0 − μ_i, 0)) (as `stabilised_causal_attention` reads its initial state).
  """
  ref_global_BxLxH = segment_max(ref_BxLxH, segments, axis, causal=causal)
  phi_k = phi_k_BxLxHxF * jnp.exp(ref_BxLxH - ref_global_BxLxH)[..., None]
  if not causal:
    z_Bx1xHxF = jax.lax.psum(jnp.sum(phi_k, axis=1, keepdims=True), axis)
    phi_q = _rescale_queries(phi_q_BxLxHxF, z_Bx1xHxF)
    return linear_attention_sp(phi_q, phi_k, v_BxLxHxD, axis, causal=False, eps=eps)
  local = _stabilised_state(phi_k, ref_global_BxLxH, v_BxLxHxD.astype(jnp.float32))
  identity = (jnp.zeros_like(local[0]), jnp.zeros_like(local[1]), jnp.full_like(local[2], NEG))
  kv0, z0, r0 = exclusive_scan(_merge_stabilised, local, identity, axis)
  z_BxLxHxF = causal_key_sums(phi_k, ref_global_BxLxH, chunk_size=chunk_size) + z0[:, None] * jnp.exp(
    jnp.minimum(r0[:, None] - ref_global_BxLxH[..., None], 0.0)
  )
  out, _ = stabilised_causal_attention(
    _rescale_queries(phi_q_BxLxHxF, z_BxLxHxF),
    phi_k,
    ref_global_BxLxH,
    v_BxLxHxD,
    eps=eps,
    form=form,
    chunk_size=chunk_size,
    initial_state=(kv0, z0, r0),
  )
  return out


# ----------------------------------------------------------------------------------------------------------------
# Decay family
# ----------------------------------------------------------------------------------------------------------------


def _compose_decay(a, b):
  """(T, S) then (T', S'): (T + T', e^{T'} S + S') with T the total log-decay BxHxG of a span, S its state BxHxFxD."""
  (t_a, s_a), (t_b, s_b) = a, b
  return t_a + t_b, jnp.exp(t_b)[..., None] * s_a + s_b


def _state_from_other_shards(total_BxHxG, state_BxHxFxD, axis: str, reverse: bool) -> jax.Array:
  identity = (jnp.zeros_like(total_BxHxG), jnp.zeros_like(state_BxHxFxD))
  return exclusive_scan(_compose_decay, (total_BxHxG, state_BxHxFxD), identity, axis, reverse=reverse)[1]


def _segment_log_decay(g_BxLxHxG, segments: Segments, axis: str, reverse: bool) -> jax.Array:
  """`decay.segment_log_decay` across shards: the reset at a segment's first (last) token compares its id with the
  token just before (after) the shard, so ids get a one-token halo."""
  g = jnp.pad(g_BxLxHxG, ((0, 0), (1, 1), (0, 0), (0, 0)))
  return segment_log_decay(g, halo_segments(segments, axis, 1, 1), reverse=reverse)[:, 1:-1]


def decay_attention_sp(
  q_BxLxHxF, k_BxLxHxF, v_BxLxHxD, g_BxLxHxG, segments: Segments, axis: str, *, causal: bool, **core_kwargs: Any
) -> jax.Array:
  """`decay.decay_attention` with packing resets, over a sequence split along `axis`; q, k, v zero at padding, g the
  raw log-decays (≤ 0; the resets are added here). `core_kwargs`: form, chunk_size, sub_chunk_size.

  Forward: the local pass yields the shard's output and the state S_i it leaves at its end; with T_i = Σ_shard g,
  the state arriving from the earlier shards is P_i = (exclusive scan of (T_i, S_i) under `_compose_decay`).S, which
  query t reads decayed through the shard so far:  o_t += (q_t ⊙ e^{Σ_{r≤t} g_r}) P_i  (r over this shard).
  Bidirectional adds the mirror image: shard states S̃_i = Σ_j (k_j ⊙ e^{Σ_{r<j} g̃_r})ᵀ v_j scanned from the last
  shard, read as (q_t ⊙ e^{Σ_{r≥t} g̃_r}) P̃_i (the core's backward pass decays j > t by Σ_{t≤r<j} g̃_r).
  A reset (g = −inf) inside a shard zeroes T and the read factor, so no state crosses a segment start.
  """
  q, k, v = (x.astype(jnp.float32) for x in (q_BxLxHxF, k_BxLxHxF, v_BxLxHxD))
  g_fwd = _segment_log_decay(g_BxLxHxG, segments, axis, reverse=False)
  g_bwd = None if causal else _segment_log_decay(g_BxLxHxG, segments, axis, reverse=True)
  out, s_local = decay_attention(q, k, v, g_fwd, causal=causal, g_backward_BxLxHxG=g_bwd, **core_kwargs)
  s_before = _state_from_other_shards(jnp.sum(g_fwd, axis=1), s_local, axis, reverse=False)
  out = out + jnp.einsum("blhf,bhfd->blhd", q * jnp.exp(jnp.cumsum(g_fwd, axis=1)), s_before)
  if causal:
    return out
  before_j = jnp.cumsum(jnp.pad(g_bwd[:, :-1], ((0, 0), (1, 0), (0, 0), (0, 0))), axis=1)  # Σ_{r<j} g̃_r
  s_bwd_local = jnp.einsum("blhf,blhd->bhfd", k * jnp.exp(before_j), v)
  s_after = _state_from_other_shards(jnp.sum(g_bwd, axis=1), s_bwd_local, axis, reverse=True)
  from_t = jnp.flip(jnp.cumsum(jnp.flip(g_bwd, axis=1), axis=1), axis=1)  # Σ_{r≥t} g̃_r
  return out + jnp.einsum("blhf,bhfd->blhd", q * jnp.exp(from_t), s_after)


# ----------------------------------------------------------------------------------------------------------------
# Softmax
# ----------------------------------------------------------------------------------------------------------------


def _pair_mask(q_ids_BxL, q_index_L, k_ids_BxS, k_index_S, causal: bool) -> jax.Array:
  """Bx1xLxS: same non-zero segment (and key index ≤ query index if causal), from global token indices."""
  mask_BxLxS = (q_ids_BxL[:, :, None] == k_ids_BxS[:, None, :]) & (k_ids_BxS[:, None, :] > 0)
  if causal:
    mask_BxLxS &= q_index_L[:, None] >= k_index_S[None, :]
  return mask_BxLxS[:, None]


def _online_softmax(stats, q_BxLxHxD, k_BxSxHxD, v_BxSxHxD, mask_Bx1xLxS):
  """One key block into the running (max m, sum l, accumulator a):  m' = max(m, max_j s_j),
  l' = l e^(m−m') + Σ_j e^(s_j−m'),  a' = a e^(m−m') + Σ_j e^(s_j−m') v_j  (masked pairs add exactly 0)."""
  m_BxHxL, l_BxHxL, acc_BxHxLxD = stats
  s_BxHxLxS = jnp.einsum("blhd,bshd->bhls", q_BxLxHxD, k_BxSxHxD, preferred_element_type=jnp.float32)
  s_BxHxLxS = jnp.where(mask_Bx1xLxS, s_BxHxLxS * q_BxLxHxD.shape[-1] ** -0.5, NEG)
  m_new = jnp.maximum(m_BxHxL, jnp.max(s_BxHxLxS, axis=-1))
  p_BxHxLxS = jnp.where(mask_Bx1xLxS, jnp.exp(s_BxHxLxS - m_new[..., None]), 0.0)
  rescale = jnp.exp(m_BxHxL - m_new)
  pv_BxHxLxD = jnp.einsum(
    "bhls,bshd->bhld", p_BxHxLxS.astype(v_BxSxHxD.dtype), v_BxSxHxD, preferred_element_type=jnp.float32
  )
  return m_new, l_BxHxL * rescale + jnp.sum(p_BxHxLxS, axis=-1), acc_BxHxLxD * rescale[..., None] + pv_BxHxLxD


def ring_attention(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, segments: Segments, axis: str, *, causal: bool) -> jax.Array:
  """Softmax attention with K/V (and their segment ids) rotating around the ring of `axis`: shard i starts with its
  own block and at step t holds shard (i − t) mod n's; online softmax over the n blocks, out = a / l."""
  n, me = jax.lax.axis_size(axis), jax.lax.axis_index(axis)
  b, length, h, _ = q_BxLxHxD.shape
  index_L = jnp.arange(length)
  ids_BxL = segments.segment_ids

  def block(stats, k, v, k_ids, source):
    mask = _pair_mask(ids_BxL, me * length + index_L, k_ids, source * length + index_L, causal)
    return _online_softmax(stats, q_BxLxHxD, k, v, mask)

  empty = (
    jnp.full((b, h, length), NEG, jnp.float32),
    jnp.zeros((b, h, length), jnp.float32),
    jnp.zeros((b, h, length, v_BxLxHxD.shape[-1]), jnp.float32),
  )
  stats = block(empty, k_BxLxHxD, v_BxLxHxD, ids_BxL, me)

  def step(carry, t):
    kv_ids, stats = carry
    kv_ids = jax.lax.ppermute(kv_ids, axis, [(i, (i + 1) % n) for i in range(n)])
    return (kv_ids, block(stats, *kv_ids, (me - t) % n)), None

  (_, (_, l_BxHxL, acc_BxHxLxD)), _ = jax.lax.scan(step, ((k_BxLxHxD, v_BxLxHxD, ids_BxL), stats), jnp.arange(1, n))
  out_BxHxLxD = acc_BxHxLxD / jnp.where(l_BxHxL > 0, l_BxHxL, 1.0)[..., None]
  return zero_padding(jnp.einsum("bhld->blhd", out_BxHxLxD).astype(v_BxLxHxD.dtype), segments)


def allgather_attention(
  q_BxLxHxD,
  k_BxLxHxD,
  v_BxLxHxD,
  segments: Segments,
  axis: str,
  *,
  causal: bool,
  implementation: str | None = None,
) -> jax.Array:
  """Softmax attention of the shard's queries over all-gathered K/V (BxSxHxD, S = n·L): one masked block, by
  `softmax.materialized_attention` (or `jax.nn.dot_product_attention` with that `implementation`)."""
  length = q_BxLxHxD.shape[1]
  k_all, v_all, ids_all = (
    jax.lax.all_gather(x, axis, axis=1, tiled=True) for x in (k_BxLxHxD, v_BxLxHxD, segments.segment_ids)
  )
  q_index_L = jax.lax.axis_index(axis) * length + jnp.arange(length)
  mask = _pair_mask(segments.segment_ids, q_index_L, ids_all, jnp.arange(ids_all.shape[1]), causal)
  if implementation == "materialized" or (implementation is None and jax.default_backend() == "cpu"):
    out = materialized_attention(q_BxLxHxD, k_all, v_all, mask)
  else:
    out = jax.nn.dot_product_attention(q_BxLxHxD, k_all, v_all, mask=mask, implementation=implementation)
  return zero_padding(out, segments)


# ----------------------------------------------------------------------------------------------------------------
# Variants: each runs the mixer's own shard-local pieces around its family's sequence-parallel core
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Call:
  axis: str
  causal: bool
  length: int  # the global L
  softmax_mode: str


def _forms(cfg) -> dict[str, Any]:
  return dict(form=cfg.causal_form, chunk_size=cfg.chunk_size)


def _softmax(mixer, q, k, v, segments, call: _Call):
  if call.softmax_mode == "ring":
    return ring_attention(q, k, v, segments, call.axis, causal=call.causal)
  return allgather_attention(q, k, v, segments, call.axis, causal=call.causal, implementation=mixer.cfg.implementation)


def _linear(mixer, q, k, v, segments, call: _Call):
  cfg = mixer.cfg
  phi_q, phi_k = mixer.features(q, k, segments)
  eps = cfg.eps if cfg.normalize else None
  out = linear_attention_sp(phi_q, phi_k, v, call.axis, causal=call.causal, eps=eps, **_forms(cfg))
  return mixer.finalize(out.astype(v.dtype), segments)


def _hedgehog(mixer, q, k, v, segments, call: _Call):
  phi_q, phi_k = mixer.features(q, k, segments)
  out = linear_attention_sp(phi_q, phi_k, v, call.axis, causal=call.causal, eps=mixer.cfg.eps, **_forms(mixer.cfg))
  return zero_padding(out.astype(v.dtype), segments)


def _cosformer(mixer, q, k, v, segments, call: _Call):
  """cosformer's φ(x_i) = relu(x_i)[cos θ_i, sin θ_i], θ_i = π i / 2M, with M its segment's GLOBAL length (or
  causal_m): `cosformer_features` with the segment length taken across shards."""
  cfg = mixer.cfg
  if call.causal:
    if call.length > cfg.causal_m:
      raise ValueError(
        f"cosformer causal_m={cfg.causal_m} is shorter than the row length {call.length}; raise "
        f"causal_m to at least {call.length}"
      )
    m_BxL = jnp.full(segments.segment_ids.shape, float(cfg.causal_m), jnp.float32)
  else:
    m_BxL = jnp.maximum(segment_positions(segments, call.axis)[1], 1).astype(jnp.float32)
  angle_BxLx1x1 = ((math.pi / 2) * segments.positions.astype(jnp.float32) / m_BxL)[:, :, None, None]

  def phi(x_BxLxHxD):
    r = jax.nn.relu(x_BxLxHxD.astype(jnp.float32))
    return segment_features(jnp.concatenate([r * jnp.cos(angle_BxLx1x1), r * jnp.sin(angle_BxLx1x1)], -1), segments)

  out = linear_attention_sp(phi(q), phi(k), v, call.axis, causal=call.causal, eps=cfg.eps, **_forms(cfg))
  return zero_padding(out.astype(v.dtype), segments)


def _based_window(qt, kt, v, segments, call: _Call, window: int):
  """`based.window_correction` for the shard's queries: keys, values and ids get halos of window − 1 tokens."""
  w = window - 1
  right = 0 if call.causal else w
  ext = lambda x: with_halo(x, call.axis, w, right)
  qt_ext = jnp.pad(qt, ((0, 0), (w, right), (0, 0), (0, 0)))  # halo queries are computed and dropped
  m, cv, c = window_correction(
    qt_ext, ext(kt), ext(v), halo_segments(segments, call.axis, w, right), window=window, causal=call.causal
  )
  length = qt.shape[1]
  return m[:, w : w + length], cv[:, w : w + length], c[:, w : w + length]


def _based(mixer, q, k, v, segments, call: _Call):
  """Based's Taylor features (and sliding-window correction, as in `BasedAttention.__call__`) on the linear family."""
  cfg = mixer.cfg
  qt, kt = mixer.project(q, k)
  phi_q, phi_k = (segment_features(taylor_features(x), segments) for x in (qt, kt))
  initial_state = None
  if cfg.window:
    correction = _based_window(qt, kt, v, segments, call, cfg.window)
    phi_q, phi_k, initial_state = with_window(phi_q, phi_k, v, *correction)
  out = linear_attention_sp(
    phi_q, phi_k, v, call.axis, causal=call.causal, eps=cfg.eps, initial_state=initial_state, **_forms(cfg)
  )
  return zero_padding(out.astype(v.dtype), segments)


def _performer(mixer, q, k, v, segments, call: _Call):
  cfg = mixer.cfg
  phi_q, phi_k, ref = mixer.features(q, k, segments, call.causal)  # shard-local stabilisers and key sums
  if ref is None:  # relu kernel: no stabiliser, plain linear family
    out = linear_attention_sp(phi_q, phi_k, v, call.axis, causal=call.causal, eps=cfg.eps, **_forms(cfg))
  else:
    out = favor_attention_sp(phi_q, phi_k, ref, v, segments, call.axis, causal=call.causal, eps=cfg.eps, **_forms(cfg))
  return zero_padding(out.astype(v.dtype), segments)


def _decay_inputs(q, k, v, segments):
  """fp32 q/√D, k, v with zeros at padding (as `Retention.retain` and `GatedLinearAttention.attend` prepare them)."""
  q, k, v = (mask_padding(x.astype(jnp.float32), segments) for x in (q, k, v))
  return q * q.shape[-1] ** -0.5, k, v


def _retention_row_scale(segments: Segments, num_heads: int, call: _Call) -> jax.Array:
  """`retention.decay_row_scale` from global positions and segment lengths: 1/√(Σ_m γ^|n−m|), BxLxH."""
  position_BxL, length_BxL = segment_positions(segments, call.axis)
  lg_11H = log_gammas(num_heads)[None, None, :]
  geometric = lambda n_BxL: jnp.expm1(n_BxL[..., None].astype(jnp.float32) * lg_11H) / jnp.expm1(lg_11H)
  total_BxLxH = geometric(position_BxL + 1)
  if not call.causal:
    total_BxLxH = total_BxLxH + geometric(length_BxL - position_BxL) - 1.0
  return jax.lax.rsqrt(jnp.where(segments.valid[..., None], total_BxLxH, 1.0))


def _retention(mixer, q, k, v, segments, call: _Call):
  cfg = mixer.cfg
  b, length, h, _ = q.shape
  g_BxLxHx1 = jnp.broadcast_to(log_gammas(h)[:, None], (b, length, h, 1))
  out = decay_attention_sp(
    *_decay_inputs(q, k, v, segments),
    g_BxLxHx1,
    segments,
    call.axis,
    causal=call.causal,
    sub_chunk_size=1,
    **_forms(cfg),
  )
  if cfg.normalize_decay:
    out = out * _retention_row_scale(segments, h, call)[..., None]
  return mixer.finalize(out, segments).astype(v.dtype)


def _gla(mixer, q, k, v, segments, call: _Call):
  cfg = mixer.cfg
  out = decay_attention_sp(
    *_decay_inputs(q, k, v, segments),
    mixer.log_gates(k),
    segments,
    call.axis,
    causal=call.causal,
    sub_chunk_size=cfg.sub_chunk_size,
    **_forms(cfg),
  )
  return mixer.finalize(out, segments).astype(v.dtype)


_PATHS: dict[str, Callable[..., jax.Array]] = {
  "softmax": _softmax,
  "linear": _linear,
  "performer": _performer,
  "hedgehog": _hedgehog,
  "based": _based,
  "cosformer": _cosformer,
  "retention": _retention,
  "gla": _gla,
}


def supported() -> list[str]:
  """Variants with a sequence-parallel path."""
  return sorted(_PATHS)


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------


def _check(name, q, k, v, segments, mesh: Mesh, axis: str, causal: bool, softmax_mode: str) -> None:
  if name not in _PATHS:
    raise ValueError(f"attention {name!r} has no sequence-parallel path; supported: {', '.join(supported())}")
  if softmax_mode not in SOFTMAX_MODES:
    raise ValueError(f"softmax_mode {softmax_mode!r}; choose one of {', '.join(SOFTMAX_MODES)}")
  if axis not in mesh.shape:
    raise ValueError(f"mesh has no axis {axis!r}; its axes are {', '.join(mesh.axis_names)}")
  if not q.shape[1] == k.shape[1] == v.shape[1] == segments.segment_ids.shape[1]:
    raise ValueError(
      f"sequence parallelism needs q, k, v and segments of one length, got {q.shape[1]}, "
      f"{k.shape[1]}, {v.shape[1]}, {segments.segment_ids.shape[1]}"
    )
  n = mesh.shape[axis]
  if q.shape[1] % n:
    raise ValueError(
      f"length {q.shape[1]} is not divisible by the {n} shards of mesh axis {axis!r}; pad the rows to a multiple of {n}"
    )
  check_call(name, segments, causal)


def sequence_parallel_attention(
  name: str,
  q_BxLxHxD: jax.Array,
  k_BxLxHxD: jax.Array,
  v_BxLxHxD: jax.Array,
  segments: Segments,
  *,
  mesh: Mesh,
  axis: str = "seq",
  batch_axes: str | tuple[str, ...] | None = None,
  causal: bool = False,
  config: Any = None,
  variables: Any = None,
  softmax_mode: str = "ring",
) -> jax.Array:
  """The mixer `build(name, config)` applied with `variables` (its `init` output: params, random features; None for
  variants without any) to q, k, v, segments, with L split over mesh axis `axis` and B over `batch_axes`.

  Returns out_BxLxHxD sharded as P(batch_axes, axis), equal to the mixer's unsharded output up to fp32 rounding.
  `softmax_mode`: "ring" (ppermute K/V, online softmax) or "allgather" (gather K/V once). Validation (unsupported
  variant, L not divisible by the axis size, unsupported causal/packing) raises a ValueError before tracing; a based
  window wider than a shard (window − 1 > L/n) raises one while tracing.
  """
  _check(name, q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, segments, mesh, axis, causal, softmax_mode)
  mixer, path = build(name, config), _PATHS[name]
  call = _Call(axis=axis, causal=causal, length=q_BxLxHxD.shape[1], softmax_mode=softmax_mode)
  spec = P(batch_axes, axis)

  def local(variables, q, k, v, segments):
    return path(mixer.bind(variables), q, k, v, segments, call)

  # check_vma=False: the cores' scans start from constant carries (e.g. `performer.causal_key_sums`), which the
  # varying-manual-axes check rejects inside shard_map although the result is right.
  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), spec, spec, spec, spec), out_specs=spec, check_vma=False)
  return sharded({} if variables is None else variables, q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, segments)
