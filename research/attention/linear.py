"""Kernelized linear attention (Katharopoulos et al., 2020, "Transformers are RNNs", arXiv:2006.16236).

    out_i = φ(q_i) Σ_j φ(k_j) v_jᵀ / (φ(q_i) Σ_j φ(k_j) + eps)        (j ≤ i when causal)

Padding and packing are exact: features are expanded per segment, φ̃(x) = onehot(segment) ⊗ φ(x), so
φ̃(q_i)·φ̃(k_j) = [seg_i = seg_j ≠ 0] φ(q_i)·φ(k_j). Every core then needs no mask at all, and the state
holds one (F×D) block per segment. Cores are pure functions returning (out, final_state) and accepting
`initial_state`, so chunking, streaming and sequence parallelism compose on them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.attention import check_call, register
from research.attention.masks import Segments, zero_padding

State = tuple[jax.Array, jax.Array]  # (kv_BxHxFxD, z_BxHxF)

FEATURE_MAPS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "elu+1": lambda x: jax.nn.elu(x) + 1.0,
  "relu": jax.nn.relu,
  "identity": lambda x: x,  # only with normalize=False: φ(q)·Σφ(k) can vanish or change sign
}
CAUSAL_FORMS = ("parallel", "recurrent", "chunked")


def check_causal_options(variant: str, causal_form: str, chunk_size: int) -> None:
  """Validation shared by every Config with a causal form and a chunk size (the linear and decay families)."""
  if causal_form not in CAUSAL_FORMS:
    raise ValueError(f"{variant} causal_form {causal_form!r}; choose one of {', '.join(CAUSAL_FORMS)}")
  if chunk_size <= 0:
    raise ValueError(f"{variant} chunk_size must be positive, got {chunk_size}")


def segment_features(phi_BxLxHxF: jax.Array, segments: Segments) -> jax.Array:
  """φ̃ = onehot(segment) ⊗ φ: BxLxHx(G·F); all-zero at padding."""
  if segments.max_segments == 1:
    return jnp.where(segments.valid[:, :, None, None], phi_BxLxHxF, 0.0)
  b, length, h, _ = phi_BxLxHxF.shape
  onehot_BxLxG = segments.one_hot(phi_BxLxHxF.dtype)
  return jnp.einsum("blg,blhf->blhgf", onehot_BxLxG, phi_BxLxHxF).reshape(b, length, h, -1)


def _zero_state(phi_k_BxSxHxF, v_BxSxHxD) -> State:
  b, _, h, f = phi_k_BxSxHxF.shape
  return jnp.zeros((b, h, f, v_BxSxHxD.shape[-1]), jnp.float32), jnp.zeros((b, h, f), jnp.float32)


def _normalize(num_BxLxHxD, den_BxLxH, eps):
  """eps=None: no normaliser (unnormalised linear attention; the mixer applies an output norm instead)."""
  return num_BxLxHxD if eps is None else num_BxLxHxD / (den_BxLxH[..., None] + eps)


def linear_attention(
  phi_q_BxLxHxF: jax.Array,
  phi_k_BxSxHxF: jax.Array,
  v_BxSxHxD: jax.Array,
  *,
  causal: bool,
  eps: float | None = 1e-6,
  form: str = "chunked",
  chunk_size: int = 64,
  initial_state: State | None = None,
) -> tuple[jax.Array, State]:
  """Linear attention over (already segment-expanded) features; fp32 state and normaliser (none if eps=None)."""
  phi_q, phi_k, v = (x.astype(jnp.float32) for x in (phi_q_BxLxHxF, phi_k_BxSxHxF, v_BxSxHxD))
  kv0_BxHxFxD, z0_BxHxF = initial_state if initial_state is not None else _zero_state(phi_k, v)
  if not causal:
    kv_BxHxFxD = kv0_BxHxFxD + jnp.einsum("bshf,bshd->bhfd", phi_k, v)
    z_BxHxF = z0_BxHxF + jnp.sum(phi_k, axis=1)
    num = jnp.einsum("blhf,bhfd->blhd", phi_q, kv_BxHxFxD)
    den = jnp.einsum("blhf,bhf->blh", phi_q, z_BxHxF)
    return _normalize(num, den, eps), (kv_BxHxFxD, z_BxHxF)
  if form == "parallel":
    return _causal_parallel(phi_q, phi_k, v, (kv0_BxHxFxD, z0_BxHxF), eps)
  if form == "recurrent":
    return _causal_recurrent(phi_q, phi_k, v, (kv0_BxHxFxD, z0_BxHxF), eps)
  if form == "chunked":
    return _causal_chunked(phi_q, phi_k, v, (kv0_BxHxFxD, z0_BxHxF), eps, chunk_size)
  raise ValueError(f"unknown causal form {form!r}; choose one of {', '.join(CAUSAL_FORMS)}")


def _causal_parallel(phi_q, phi_k, v, state: State, eps):
  """Materialized O(L²): masked φ(q)φ(k)ᵀ."""
  kv0, z0 = state
  length = phi_q.shape[1]
  a_BxHxLxS = jnp.einsum("blhf,bshf->bhls", phi_q, phi_k) * jnp.tril(jnp.ones((length, length), jnp.float32))
  num = jnp.einsum("bhls,bshd->blhd", a_BxHxLxS, v) + jnp.einsum("blhf,bhfd->blhd", phi_q, kv0)
  den = jnp.einsum("bhls->blh", a_BxHxLxS) + jnp.einsum("blhf,bhf->blh", phi_q, z0)
  final = (kv0 + jnp.einsum("bshf,bshd->bhfd", phi_k, v), z0 + jnp.sum(phi_k, axis=1))
  return _normalize(num, den, eps), final


def _causal_recurrent(phi_q, phi_k, v, state: State, eps):
  """The RNN form: one token per scan step, O(F·D) state."""

  def step(carry, xs):
    kv_BxHxFxD, z_BxHxF = carry
    q_BxHxF, k_BxHxF, v_BxHxD = xs
    kv_BxHxFxD = kv_BxHxFxD + k_BxHxF[..., None] * v_BxHxD[..., None, :]
    z_BxHxF = z_BxHxF + k_BxHxF
    num = jnp.einsum("bhf,bhfd->bhd", q_BxHxF, kv_BxHxFxD)
    den = jnp.einsum("bhf,bhf->bh", q_BxHxF, z_BxHxF)
    return (kv_BxHxFxD, z_BxHxF), _normalize(num, den, eps)

  xs = tuple(jnp.swapaxes(x, 0, 1) for x in (phi_q, phi_k, v))
  final, out_LxBxHxD = jax.lax.scan(step, state, xs)
  return jnp.swapaxes(out_LxBxHxD, 0, 1), final


def _causal_chunked(phi_q, phi_k, v, state: State, eps, chunk_size):
  """Chunks of C tokens: exact causal attention inside a chunk, the carried state across chunks."""
  b, length, h, f = phi_q.shape
  c = min(chunk_size, length)
  pad = -length % c
  if pad:  # zero features contribute nothing; padded outputs are sliced off
    phi_q, phi_k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (phi_q, phi_k, v))
  n = (length + pad) // c
  chunks = tuple(jnp.moveaxis(x.reshape(b, n, c, h, -1), 1, 0) for x in (phi_q, phi_k, v))
  tril_CxC = jnp.tril(jnp.ones((c, c), jnp.float32))

  def step(carry, xs):
    kv_BxHxFxD, z_BxHxF = carry
    q_BxCxHxF, k_BxCxHxF, v_BxCxHxD = xs
    a_BxHxCxC = jnp.einsum("bchf,bshf->bhcs", q_BxCxHxF, k_BxCxHxF) * tril_CxC
    num = jnp.einsum("bhcs,bshd->bchd", a_BxHxCxC, v_BxCxHxD) + jnp.einsum("bchf,bhfd->bchd", q_BxCxHxF, kv_BxHxFxD)
    den = jnp.einsum("bhcs->bch", a_BxHxCxC) + jnp.einsum("bchf,bhf->bch", q_BxCxHxF, z_BxHxF)
    kv_BxHxFxD = kv_BxHxFxD + jnp.einsum("bshf,bshd->bhfd", k_BxCxHxF, v_BxCxHxD)
    z_BxHxF = z_BxHxF + jnp.sum(k_BxCxHxF, axis=1)
    return (kv_BxHxFxD, z_BxHxF), _normalize(num, den, eps)

  final, out_NxBxCxHxD = jax.lax.scan(step, state, chunks)
  out = jnp.moveaxis(out_NxBxCxHxD, 0, 1).reshape(b, n * c, h, -1)
  return out[:, :length], final


def linear_weights(phi_q_BxLxHxF, phi_k_BxSxHxF, *, causal: bool, eps: float | None) -> jax.Array:
  """Implied fp32 weights BxHxLxS: the normalised φ(q)φ(k)ᵀ (same eps as the fast path; raw if eps=None)."""
  a = jnp.einsum(
    "blhf,bshf->bhls",
    phi_q_BxLxHxF.astype(jnp.float32),
    phi_k_BxSxHxF.astype(jnp.float32),
    precision=jax.lax.Precision.HIGHEST,
  )
  if causal:
    a = a * jnp.tril(jnp.ones(a.shape[-2:], jnp.float32))
  return a if eps is None else a / (jnp.sum(a, axis=-1, keepdims=True) + eps)


def rms_norm_heads(out_BxLxHxD: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Parameter-free RMS norm over each head's D channels (the output norm of unnormalised linear attention)."""
  out = out_BxLxHxD.astype(jnp.float32)
  return (out * jax.lax.rsqrt(jnp.mean(out**2, axis=-1, keepdims=True) + eps)).astype(out_BxLxHxD.dtype)


@register(
  "linear",
  supports_causal=True,
  supports_packing=True,
  length_invariant=True,
  positions=("learned", "rope"),
  complexity="O(N d^2)",
  state_size=lambda L, H, D: 4 * H * (D * D + D),  # (kv, z) per head, elu+1 keeps F = D
  paper="Katharopoulos et al. 2020, arXiv:2006.16236",
)
class LinearAttention(nn.Module):
  @dataclasses.dataclass(frozen=True)
  class Config:
    feature_map: str = "elu+1"
    eps: float = 1e-6
    causal_form: str = "chunked"
    chunk_size: int = 64
    normalize: bool = True  # False: no φ(q)·Σφ(k) denominator; an RMS output norm per head instead

    def __post_init__(self):
      if self.feature_map == "identity" and self.normalize:
        raise ValueError("linear feature_map='identity' needs normalize=False (its denominator can vanish)")
      if self.feature_map not in FEATURE_MAPS:
        raise ValueError(f"linear feature_map {self.feature_map!r}; choose one of {', '.join(FEATURE_MAPS)}")
      check_causal_options("linear", self.causal_form, self.chunk_size)
      if not self.eps > 0:
        raise ValueError(f"linear eps must be > 0, got {self.eps}")

  cfg: Config = Config()

  def features(self, q, k, segments: Segments):
    phi = FEATURE_MAPS[self.cfg.feature_map]
    return segment_features(phi(q), segments), segment_features(phi(k), segments)

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    check_call("linear", segments, causal)
    phi_q, phi_k = self.features(q, k, segments)
    out, _ = linear_attention(
      phi_q, phi_k, v, causal=causal, eps=self._eps, form=self.cfg.causal_form, chunk_size=self.cfg.chunk_size
    )
    return self.finalize(out.astype(v.dtype), segments)

  @property
  def _eps(self) -> float | None:
    return self.cfg.eps if self.cfg.normalize else None

  def finalize(self, out_BxLxHxD, segments: Segments):
    """Output normalisation (only without the denominator) and exact zeros at padding."""
    out = out_BxLxHxD if self.cfg.normalize else rms_norm_heads(out_BxLxHxD)
    return zero_padding(out, segments)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    phi_q, phi_k = self.features(q, k, segments)
    return linear_weights(phi_q, phi_k, causal=causal, eps=self._eps)
