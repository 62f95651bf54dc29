"""Performer / FAVOR+ (Choromanski et al., 2021, "Rethinking Attention with Performers", arXiv:2009.14794).

Positive orthogonal random features estimate the softmax kernel. With x' = x·D^(-1/4) (so that
exp(q'·k') = exp(qᵀk/√D)) and W ∈ R^(m×D) with orthogonal rows w_1..w_m (QR of Gaussian blocks, rows rescaled
by chi_D-distributed norms):

    φ(x) = exp(W x' − ‖x'‖²/2) / √m,        E[φ(q)·φ(k)] = exp(qᵀk / √D)                  (FAVOR+, Lemma 1)
    out_i = φ(q_i) Σ_j φ(k_j) v_jᵀ / (φ(q_i) Σ_j φ(k_j) + eps)                            (j ≤ i when causal)

`kernel="relu"` is FAVOR-ReLU, φ(x) = (relu(W x') + kernel_eps) / √m.

Stabilisers (exp overflows for large logits). Each is a constant that multiplies the numerator and the
denominator of one query alike, so it cancels up to eps; the implied weights use the very same stabilised
features, so fast path and oracle agree exactly, eps included (all stabilisers are stop-gradient constants):
  * key j, bidirectional: subtract μ_seg = max over the VALID tokens of j's segment (and features) of
    (W k' − ‖k'‖²/2); never over padding or other packed segments, so padded == packed == alone exactly.
  * key j, causal: a segment-wide max would leak the future, so μ_j is the RUNNING max over the tokens of j's
    segment up to j. Keys are stored relative to their own μ_j, φ̂(k_j) = φ(k_j) e^(−μ_j) ≤ 1/√m, and query i
    reads them relative to its own μ_i:  A_ij = φ(q_i)·φ̂(k_j) · e^(μ_j − μ_i)  (j ≤ i, same segment, so
    μ_j ≤ μ_i and the factor is ≤ 1). The recurrent and chunked forms keep the state in the reference of the
    largest m seen so far (per feature column, i.e. per packed segment) and rescale it when that grows.
  * query i: subtract max_f (W q'_i)_f (no overflow; ‖q'‖²/2 cancels), then divide by
    s_i = max_f φ(q_i)_f Z_if, where Z_i = Σ_j φ̂(k_j) e^(μ_j − μ_i) is the key-sum (normaliser) state that
    query i reads (the segment total, or the causal prefix). The denominator Σ_f φ(q_i)_f Z_if then lies in
    [1, m]: eps stays a relative 1e-6 safety term and gradients stay finite however peaked the kernel is
    (the raw key/query maxima alone leave denominators down at 1e-20 for ×10 logits, where eps would
    dominate and shrink the output).

The random matrix is NOT a parameter: it lives in the variable collection "random_features" (drawn from the
"params" rng at init) and can be redrawn at any time with `redraw_features(variables, rng)`, or by replacing
`variables["random_features"]` with that collection of a fresh `mixer.init(new_rng, ...)`. A pure draw is
`draw_features(rng, num_features, head_dim, orthogonal=True)`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.attention import check_call, register
from research.attention.linear import (
  CAUSAL_FORMS,
  check_causal_options,
  linear_attention,
  linear_weights,
  segment_features,
)
from research.attention.masks import Segments, zero_padding

COLLECTION = "random_features"
KERNELS = ("softmax", "relu")
NEG = -1e30  # "no contribution yet" reference of a state column: finite, so exp(NEG − NEG) = 1, never NaN
QUERY_FLOOR = 1e-20  # s_i below this (a vanishing denominator): φ(q)/s_i stays finite, eps takes over
StabilisedState = tuple[jax.Array, jax.Array, jax.Array]  # (kv_BxHxFxD, z_BxHxF, ref_BxHxF) in log-reference ref


def draw_features(rng: jax.Array, num_features: int, head_dim: int, orthogonal: bool = True) -> jax.Array:
  """W_FxD fp32. Orthogonal: ⌈F/D⌉ Haar-orthogonal DxD blocks (QR of Gaussians, sign-fixed), rows stacked and
  rescaled by independent chi_D norms so each row is marginally N(0, I_D). Otherwise i.i.d. Gaussian rows."""
  if not orthogonal:
    return jax.random.normal(rng, (num_features, head_dim), jnp.float32)
  n_blocks = -(-num_features // head_dim)
  n_block = n_blocks * head_dim * head_dim
  g = jax.random.normal(rng, (n_block + num_features * head_dim,), jnp.float32)  # one draw: one (slow) compile
  g_NxDxD = g[:n_block].reshape(n_blocks, head_dim, head_dim)
  q_NxDxD, r_NxDxD = jnp.linalg.qr(g_NxDxD)
  q_NxDxD = q_NxDxD * jnp.sign(jnp.diagonal(r_NxDxD, axis1=-2, axis2=-1))[:, None, :]  # Haar (Mezzadri 2007)
  rows_FxD = jnp.swapaxes(q_NxDxD, -1, -2).reshape(n_blocks * head_dim, head_dim)[:num_features]
  norms_F = jnp.linalg.norm(g[n_block:].reshape(num_features, head_dim), axis=-1)
  return rows_FxD * norms_F[:, None]


def redraw_features(variables: Any, rng: jax.Array, orthogonal: bool = True) -> Any:
  """`variables` with every array of the "random_features" collection redrawn (shape kept; leading axes, e.g.
  the stacked layers of nn.scan, get independent draws). Other collections are returned untouched."""
  leaves, treedef = jax.tree_util.tree_flatten(variables[COLLECTION])
  new = []
  for i, w in enumerate(leaves):
    *lead, f, d = w.shape
    keys = jax.random.split(jax.random.fold_in(rng, i), math.prod(lead))
    draws = jax.vmap(lambda key, f=f, d=d: draw_features(key, f, d, orthogonal))(keys)
    new.append(draws.reshape(w.shape).astype(w.dtype))
  return {**variables, COLLECTION: jax.tree_util.tree_unflatten(treedef, new)}


def _segment_max(x_BxLxH: jax.Array, segments: Segments, running: bool) -> jax.Array:
  """Per token: max of x over the valid tokens of its segment (all of them, or those up to it if `running`).
  Padding gets its own value (finite; its features are zeroed anyway)."""
  valid_BxL = segments.valid
  member_BxLxG = valid_BxL[:, :, None] if segments.max_segments == 1 else segments.one_hot() > 0
  masked_BxLxGxH = jnp.where(member_BxLxG[..., None], x_BxLxH[:, :, None], -jnp.inf)
  if running:
    seg_max_BxLxGxH = jax.lax.cummax(masked_BxLxGxH, axis=1)
  else:
    seg_max_BxLxGxH = jnp.broadcast_to(jnp.max(masked_BxLxGxH, axis=1, keepdims=True), masked_BxLxGxH.shape)
  idx_BxLx1x1 = jnp.clip(segments.segment_ids - 1, 0, segments.max_segments - 1)[:, :, None, None]
  own_BxLxH = jnp.take_along_axis(seg_max_BxLxGxH, idx_BxLx1x1, axis=2)[:, :, 0]
  return jnp.where(valid_BxL[:, :, None], own_BxLxH, x_BxLxH)


def favor_features(
  q_BxLxHxD: jax.Array,
  k_BxLxHxD: jax.Array,
  w_FxD: jax.Array,
  segments: Segments,
  *,
  causal: bool,
  kernel: str = "softmax",
  kernel_eps: float = 1e-3,
  chunk_size: int = 64,
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """(φ̃(q), φ̃(k), key reference μ_BxLxH or None): stabilised, segment-expanded features BxLxHx(G·F).

  softmax kernel: φ̃(k_j) holds φ(k_j)·e^(−μ_j) with μ_j the segment max (bidirectional) or the segment's
  running max (causal) of W k' − ‖k'‖²/2; φ̃(q_i) is scaled so that its denominator lies in [1, m] (see the
  module docstring; `chunk_size` only sets the scan of the causal key sums). relu kernel: μ is None.
  """
  d, m = q_BxLxHxD.shape[-1], w_FxD.shape[0]
  q_s, k_s = (x.astype(jnp.float32) * d**-0.25 for x in (q_BxLxHxD, k_BxLxHxD))
  w_FxD = w_FxD.astype(jnp.float32)
  uq_BxLxHxF, uk_BxLxHxF = (jnp.einsum("blhd,fd->blhf", x, w_FxD) for x in (q_s, k_s))
  if kernel == "relu":
    phi_q, phi_k = ((jax.nn.relu(u) + kernel_eps) * m**-0.5 for u in (uq_BxLxHxF, uk_BxLxHxF))
    return segment_features(phi_q, segments), segment_features(phi_k, segments), None
  if kernel != "softmax":
    raise ValueError(f"performer kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
  phi_q = jnp.exp(uq_BxLxHxF - jax.lax.stop_gradient(jnp.max(uq_BxLxHxF, axis=-1, keepdims=True))) * m**-0.5
  ek_BxLxHxF = uk_BxLxHxF - 0.5 * jnp.sum(k_s**2, axis=-1, keepdims=True)
  ref_BxLxH = _segment_max(jax.lax.stop_gradient(jnp.max(ek_BxLxHxF, axis=-1)), segments, running=causal)
  phi_k = segment_features(jnp.exp(ek_BxLxHxF - ref_BxLxH[..., None]) * m**-0.5, segments)
  if causal:
    z_BxLxHxF = causal_key_sums(phi_k, ref_BxLxH, chunk_size=chunk_size)
  else:
    z_BxLxHxF = jnp.sum(phi_k, axis=1, keepdims=True)
  return _normalise_queries(segment_features(phi_q, segments), z_BxLxHxF), phi_k, ref_BxLxH


def _normalise_queries(phi_q_BxLxHxF: jax.Array, z_BxLxHxF: jax.Array) -> jax.Array:
  """φ(q_i) / s_i with s_i = max_f φ(q_i)_f Z_if (a stop-gradient per-query constant): Σ_f φ(q_i)_f Z_if ∈ [1, F]."""
  s_BxLxH = jax.lax.stop_gradient(jnp.max(phi_q_BxLxHxF * z_BxLxHxF, axis=-1))
  return phi_q_BxLxHxF / jnp.maximum(s_BxLxH, QUERY_FLOOR)[..., None]


# --- the causal core with per-token key references ------------------------------------------------------------


def _column_ref(phi_k_BxLxHxF: jax.Array, ref_BxLxH: jax.Array) -> jax.Array:
  """Log-reference of each state column a key writes to: its μ_j where its feature is non-zero, else NEG."""
  return jnp.where(phi_k_BxLxHxF > 0, ref_BxLxH[..., None], NEG)


def _read_scale(phi_q_BxLxHxF: jax.Array, state_ref_BxHxF: jax.Array, ref_BxLxH: jax.Array) -> jax.Array:
  """φ(q_i) with each state column moved into query i's reference: × e^(min(r_f − μ_i, 0)). Exact on i's own
  segment columns (r_f ≤ μ_i there); the clamp only keeps other segments' columns (φ(q_i) = 0) finite."""
  return phi_q_BxLxHxF * jnp.exp(jnp.minimum(state_ref_BxHxF[:, None] - ref_BxLxH[..., None], 0.0))


def _absorb(state: StabilisedState, phi_k_BxCxHxF, v_BxCxHxD, col_ref_BxCxHxF) -> StabilisedState:
  """Add a block of keys to the state, moving it to the new per-column reference max(r, keys' refs).
  v=None: only the key sums z (kv is passed through)."""
  kv_BxHxFxD, z_BxHxF, r_BxHxF = state
  r_new_BxHxF = jnp.maximum(r_BxHxF, jnp.max(col_ref_BxCxHxF, axis=1))
  decay_BxHxF = jnp.exp(r_BxHxF - r_new_BxHxF)
  k_w_BxCxHxF = phi_k_BxCxHxF * jnp.exp(col_ref_BxCxHxF - r_new_BxHxF[:, None])
  if v_BxCxHxD is not None:
    kv_BxHxFxD = kv_BxHxFxD * decay_BxHxF[..., None] + jnp.einsum("bchf,bchd->bhfd", k_w_BxCxHxF, v_BxCxHxD)
  z_BxHxF = z_BxHxF * decay_BxHxF + jnp.sum(k_w_BxCxHxF, axis=1)
  return kv_BxHxFxD, z_BxHxF, r_new_BxHxF


def _pair_decay(ref_BxLxH: jax.Array) -> jax.Array:
  """BxHxLxL causal e^(min(μ_j − μ_i, 0)) [j ≤ i]: exact for same-segment pairs (μ_j ≤ μ_i); the clamp only
  keeps cross-segment pairs finite, whose feature products are 0."""
  ref_BxHxL = jnp.einsum("blh->bhl", ref_BxLxH)
  length = ref_BxHxL.shape[-1]
  rel_BxHxLxS = ref_BxHxL[:, :, None, :] - ref_BxHxL[..., None]
  return jnp.exp(jnp.minimum(rel_BxHxLxS, 0.0)) * jnp.tril(jnp.ones((length, length), jnp.float32))


def _pair_weights(phi_q_BxLxHxF, phi_k_BxLxHxF, ref_BxLxH, precision=None) -> jax.Array:
  """Causal A_ij = φ(q_i)·φ̂(k_j) e^(μ_j − μ_i) for j ≤ i, BxHxLxS (cross-segment terms are 0 already)."""
  return jnp.einsum("blhf,bshf->bhls", phi_q_BxLxHxF, phi_k_BxLxHxF, precision=precision) * _pair_decay(ref_BxLxH)


def _chunks(xs, pads, length, c):
  """Zero/NEG-pad each BxL... array to a multiple of c and split it into N chunks: NxBxCx..."""
  pad = -length % c
  out = []
  for x, cv in zip(xs, pads, strict=True):
    if pad:
      x = jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2), constant_values=cv)
    out.append(jnp.moveaxis(x.reshape(x.shape[0], -1, c, *x.shape[2:]), 1, 0))
  return tuple(out)


def causal_key_sums(phi_k_BxLxHxF: jax.Array, ref_BxLxH: jax.Array, *, chunk_size: int = 64) -> jax.Array:
  """Z_i = Σ_{j≤i} φ̂(k_j) e^(μ_j − μ_i) per column, BxLxHxF: the normaliser state that query i reads."""
  phi_k, ref = phi_k_BxLxHxF.astype(jnp.float32), ref_BxLxH.astype(jnp.float32)
  b, length, h, f = phi_k.shape
  c = min(chunk_size, length)
  chunks = _chunks((phi_k, ref, _column_ref(phi_k, ref)), (0.0, 0.0, NEG), length, c)

  def step(carry, xs):
    _, z_BxHxF, r_BxHxF = carry
    k_BxCxHxF, ref_BxCxH, col_ref_BxCxHxF = xs
    z_BxCxHxF = jnp.einsum("bhcs,bshf->bchf", _pair_decay(ref_BxCxH), k_BxCxHxF) + _read_scale(
      z_BxHxF[:, None], r_BxHxF, ref_BxCxH
    )
    return _absorb(carry, k_BxCxHxF, None, col_ref_BxCxHxF), z_BxCxHxF

  init = (jnp.zeros((), jnp.float32), jnp.zeros((b, h, f), jnp.float32), jnp.full((b, h, f), NEG, jnp.float32))
  _, z_NxBxCxHxF = jax.lax.scan(step, init, chunks)
  return jnp.moveaxis(z_NxBxCxHxF, 0, 1).reshape(b, -1, h, f)[:, :length]


def stabilised_causal_attention(
  phi_q_BxLxHxF: jax.Array,
  phi_k_BxLxHxF: jax.Array,
  ref_BxLxH: jax.Array,
  v_BxLxHxD: jax.Array,
  *,
  eps: float = 1e-6,
  form: str = "chunked",
  chunk_size: int = 64,
  initial_state: StabilisedState | None = None,
) -> tuple[jax.Array, StabilisedState]:
  """Causal linear attention whose keys come with per-token log-references μ_j = `ref_BxLxH` (the true key
  feature is φ̂(k_j) e^(μ_j)):

      out_i = Σ_{j≤i} A_ij v_j / (Σ_{j≤i} A_ij + eps),   A_ij = φ(q_i)·φ̂(k_j) e^(μ_j − μ_i).

  Contract: within a segment μ is non-decreasing and ≥ the initial state's reference of that segment's
  columns (e.g. a running max); features of different segments use disjoint columns (`segment_features`).
  The state (kv, z, r) holds Σ φ̂(k_j) e^(μ_j − r_f) v_j per column f. Forms: parallel O(L²), recurrent (one
  token per step) and chunked; all agree up to rounding.
  """
  phi_q, phi_k, v = (x.astype(jnp.float32) for x in (phi_q_BxLxHxF, phi_k_BxLxHxF, v_BxLxHxD))
  ref = ref_BxLxH.astype(jnp.float32)
  b, length, h, f = phi_q.shape
  if initial_state is None:
    initial_state = (
      jnp.zeros((b, h, f, v.shape[-1]), jnp.float32),
      jnp.zeros((b, h, f), jnp.float32),
      jnp.full((b, h, f), NEG, jnp.float32),
    )
  col_ref = _column_ref(phi_k, ref)
  if form == "parallel":
    kv0, z0, r0 = initial_state
    a_BxHxLxS = _pair_weights(phi_q, phi_k, ref)
    q0_BxLxHxF = _read_scale(phi_q, r0, ref)
    num = jnp.einsum("bhls,bshd->blhd", a_BxHxLxS, v) + jnp.einsum("blhf,bhfd->blhd", q0_BxLxHxF, kv0)
    den = jnp.einsum("bhls->blh", a_BxHxLxS) + jnp.einsum("blhf,bhf->blh", q0_BxLxHxF, z0)
    return num / (den[..., None] + eps), _absorb(initial_state, phi_k, v, col_ref)
  if form == "recurrent":
    chunk_size = 1
  elif form != "chunked":
    raise ValueError(f"unknown causal form {form!r}; choose one of {', '.join(CAUSAL_FORMS)}")
  return _chunked(phi_q, phi_k, ref, col_ref, v, initial_state, eps, chunk_size)


def _chunked(phi_q, phi_k, ref, col_ref, v, state: StabilisedState, eps, chunk_size):
  """Chunks of C tokens: exact stabilised attention inside a chunk, the rescaled state across chunks (C=1: RNN)."""
  b, length, h, _ = phi_q.shape
  c = min(chunk_size, length)  # padded tokens: zero features, NEG column refs: they contribute nothing
  chunks = _chunks((phi_q, phi_k, ref, col_ref, v), (0.0, 0.0, 0.0, NEG, 0.0), length, c)

  def step(carry: StabilisedState, xs):
    kv_BxHxFxD, z_BxHxF, r_BxHxF = carry
    q_BxCxHxF, k_BxCxHxF, ref_BxCxH, col_ref_BxCxHxF, v_BxCxHxD = xs
    a_BxHxCxC = _pair_weights(q_BxCxHxF, k_BxCxHxF, ref_BxCxH)
    q0_BxCxHxF = _read_scale(q_BxCxHxF, r_BxHxF, ref_BxCxH)
    num = jnp.einsum("bhcs,bshd->bchd", a_BxHxCxC, v_BxCxHxD) + jnp.einsum("bchf,bhfd->bchd", q0_BxCxHxF, kv_BxHxFxD)
    den = jnp.einsum("bhcs->bch", a_BxHxCxC) + jnp.einsum("bchf,bhf->bch", q0_BxCxHxF, z_BxHxF)
    return _absorb(carry, k_BxCxHxF, v_BxCxHxD, col_ref_BxCxHxF), num / (den[..., None] + eps)

  final, out_NxBxCxHxD = jax.lax.scan(step, state, chunks)
  out = jnp.moveaxis(out_NxBxCxHxD, 0, 1).reshape(b, -1, h, v.shape[-1])
  return out[:, :length], final


def stabilised_causal_weights(phi_q_BxLxHxF, phi_k_BxLxHxF, ref_BxLxH, *, eps: float) -> jax.Array:
  """Implied fp32 weights BxHxLxS of `stabilised_causal_attention` (same references, same eps)."""
  a = _pair_weights(
    phi_q_BxLxHxF.astype(jnp.float32),
    phi_k_BxLxHxF.astype(jnp.float32),
    ref_BxLxH.astype(jnp.float32),
    precision=jax.lax.Precision.HIGHEST,
  )
  return a / (jnp.sum(a, axis=-1, keepdims=True) + eps)


# --- the mixer ---------------------------------------------------------------------------------------------------


class RandomProjection(nn.Module):
  """W_FxD in the non-trainable collection "random_features", drawn once from the "params" rng at init."""

  num_features: int
  orthogonal: bool

  @nn.compact
  def __call__(self, head_dim: int) -> jax.Array:
    w = self.variable(
      COLLECTION, "w", lambda: draw_features(self.make_rng("params"), self.num_features, head_dim, self.orthogonal)
    )
    if w.value.shape[-2:] != (self.num_features, head_dim):
      raise ValueError(
        f"performer random features have shape {w.value.shape}, expected {(self.num_features, head_dim)} "
        f"(num_features, head_dim)"
      )
    return w.value


@register(
  "performer",
  supports_causal=True,
  supports_packing=True,
  length_invariant=True,
  positions=("learned", "rope"),
  complexity="O(N m d)",
  state_size=lambda L, H, D: 4 * H * (64 * D + 2 * 64),  # (kv, z, ref) per head at the default m = 64
  paper="Choromanski et al. 2021, arXiv:2009.14794",
)
class PerformerAttention(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    num_features: int = 64  # m
    kernel: str = "softmax"  # FAVOR+ positive features; "relu": FAVOR-ReLU
    orthogonal: bool = True
    eps: float = 1e-6  # denominator
    kernel_eps: float = 1e-3  # relu kernel only: added to every feature, keeps the denominator > 0
    causal_form: str = "chunked"
    chunk_size: int = 64

    def __post_init__(self):
      if self.kernel not in KERNELS:
        raise ValueError(f"performer kernel {self.kernel!r}; choose one of {', '.join(KERNELS)}")
      check_causal_options("performer", self.causal_form, self.chunk_size)
      if self.num_features <= 0:
        raise ValueError(f"performer num_features must be positive, got {self.num_features}")
      if not self.eps > 0:
        raise ValueError(f"performer eps must be > 0, got {self.eps}")
      if not self.kernel_eps >= 0:
        raise ValueError(f"performer kernel_eps must be >= 0, got {self.kernel_eps}")

  cfg: Config = Config()

  def setup(self):
    self.projection = RandomProjection(self.cfg.num_features, self.cfg.orthogonal)

  def features(self, q, k, segments: Segments, causal: bool):
    w_FxD = self.projection(q.shape[-1])
    return favor_features(
      q,
      k,
      w_FxD,
      segments,
      causal=causal,
      kernel=self.cfg.kernel,
      kernel_eps=self.cfg.kernel_eps,
      chunk_size=self.cfg.chunk_size,
    )

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("performer", segments, causal)
    phi_q, phi_k, ref = self.features(q, k, segments, causal)
    kwargs = dict(eps=self.cfg.eps, form=self.cfg.causal_form, chunk_size=self.cfg.chunk_size)
    if causal and ref is not None:
      out, _ = stabilised_causal_attention(phi_q, phi_k, ref, v, **kwargs)
    else:  # bidirectional (the per-segment key max is one constant per query row), or the relu kernel
      out, _ = linear_attention(phi_q, phi_k, v, causal=causal, **kwargs)
    return zero_padding(out.astype(v.dtype), segments)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    phi_q, phi_k, ref = self.features(q, k, segments, causal)
    if causal and ref is not None:
      return stabilised_causal_weights(phi_q, phi_k, ref, eps=self.cfg.eps)
    return linear_weights(phi_q, phi_k, causal=causal, eps=self.cfg.eps)
