"""Compile-only memory vs length (XLA memory_analysis of fwd+bwd): O(N) variants stay linear, softmax is quadratic."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.attention as attention
from research.attention.masks import Segments
from research.attention.softmax import softmax_weights

LENGTHS = (512, 1024, 2048, 4096, 8192)


def _temp_bytes(fn, length: int, h: int = 2, d: int = 16) -> int:
  spec = jax.ShapeDtypeStruct((1, length, h, d), jnp.float32)
  seg = Segments(jax.ShapeDtypeStruct((1, length), jnp.int32), jax.ShapeDtypeStruct((1, length), jnp.int32))
  grad = jax.grad(lambda q, k, v, s: jnp.sum(fn(q, k, v, s)), argnums=(0, 1, 2))
  return jax.jit(grad).lower(spec, spec, spec, seg).compile().memory_analysis().temp_size_in_bytes


def _mixer_fn(name):
  mixer = attention.build(name)
  q = jnp.zeros((1, 16, 2, 16))
  seg = Segments.from_lengths(jnp.array([16]), 16)
  variables = mixer.init(jax.random.key(0), q, q, q, seg, False)
  return lambda q, k, v, s: mixer.apply(variables, q, k, v, s, False)


LINEAR_FAMILY = [n for n in attention.names() if "N^2" not in attention.capabilities(n).complexity]


@pytest.mark.parametrize("name", LINEAR_FAMILY)
def test_linear_family_memory_grows_linearly(name):
  fn = _mixer_fn(name)
  mem = np.array([_temp_bytes(fn, n) for n in LENGTHS], np.float64)
  slope = np.polyfit(np.log(LENGTHS), np.log(mem), 1)[0]
  assert slope <= 1.15, (name, slope, mem.tolist())


def test_materialized_softmax_memory_is_quadratic():
  def materialized(q, k, v, s):
    return jnp.einsum("bhls,bshd->blhd", softmax_weights(q, k, s, causal=False), v)

  ratio = _temp_bytes(materialized, 8192) / _temp_bytes(materialized, 4096)
  assert ratio >= 3.5, ratio
