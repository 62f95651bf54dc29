"""Shared inputs for the attention tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import research.attention as attention
from research.attention.masks import Segments


def qkv(key, b, length, h=2, d=8, dtype=jnp.float32):
  kq, kk, kv = jax.random.split(key, 3)
  shape = (b, length, h, d)
  return tuple(jax.random.normal(k, shape, dtype) for k in (kq, kk, kv))


def packed_segments(lengths: list[int], row_length: int) -> Segments:
  """One row holding the sequences back to back (ids 1..n), then padding."""
  ids, pos = np.zeros(row_length, np.int32), np.zeros(row_length, np.int32)
  start = 0
  for i, n in enumerate(lengths):
    ids[start:start + n] = i + 1
    pos[start:start + n] = np.arange(n)
    start += n
  assert start <= row_length
  return Segments(jnp.asarray(ids)[None], jnp.asarray(pos)[None], max_segments=len(lengths))


def reference_output(mixer, variables, q, k, v, segments: Segments, causal: bool):
  """The oracle: fp32 reference from implied weights, then the mixer's own output normalisation if it has one."""
  from research.attention.reference import reference_attention

  weights = mixer.apply(variables, q, k, v, segments, causal, method="implied_weights")
  out = reference_attention(weights, v)
  if hasattr(type(mixer), "finalize"):
    out = mixer.apply(variables, out, segments, method="finalize")
  return out


def init_apply(name: str, q, k, v, segments: Segments, causal: bool, overrides=None, method=None):
  """Init and apply one mixer, each under jit (eager op-by-op dispatch is ~10x slower on CPU)."""
  mixer = attention.build(name, overrides)
  variables = jax.jit(mixer.init, static_argnums=5)(jax.random.key(0), q, k, v, segments, causal)
  apply = jax.jit(lambda variables, q, k, v, segments: mixer.apply(variables, q, k, v, segments, causal, method=method))
  return apply(variables, q, k, v, segments)
