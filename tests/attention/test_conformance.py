"""Conformance suite: every registered variant, tested against what it declares.

Adding a variant to the registry puts it under these tests.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.attention as attention
from research.attention.masks import Segments
from research.attention.reference import relative_rms_error
from tests.attention.helpers import init_apply, packed_segments, qkv, reference_output

NAMES = attention.names()
LENGTHS = [5, 9, 1, 7]  # includes a segment of length 1
# Relative RMS tolerance vs the fp32 reference: 1e-5 unless a variant's normaliser is not bounded away from 0
# (then the reason is stated here).
TOLERANCE: dict[str, float] = {}


def _causal_modes(name):
  return [False, True] if attention.capabilities(name).supports_causal else [False]


def _cases(need_weights: bool = False, need_packing: bool = False):
  caps = attention.capabilities
  keep = [n for n in NAMES if (caps(n).implied_weights or not need_weights)
          and (caps(n).supports_packing or not need_packing)]
  return [(n, c) for n in keep for c in _causal_modes(n)]


@pytest.mark.parametrize("name,causal", _cases(need_weights=True))
def test_matches_fp32_reference_with_padding(name, causal):
  q, k, v = qkv(jax.random.key(1), 3, 40)
  segments = Segments.from_lengths(jnp.array([40, 23, 7]), 40)
  mixer = attention.build(name)
  variables = jax.jit(mixer.init, static_argnums=5)(jax.random.key(0), q, k, v, segments, causal)
  out = jax.jit(lambda *a: mixer.apply(variables, *a, causal))(q, k, v, segments)
  weights = jax.jit(lambda *a: mixer.apply(variables, *a, causal, method="implied_weights"))(q, k, v, segments)
  assert out.shape == q.shape and out.dtype == q.dtype
  assert weights.shape == (3, 2, 40, 40) and weights.dtype == jnp.float32
  ref = jax.jit(lambda *a: reference_output(mixer, variables, *a, causal))(q, k, v, segments)
  assert relative_rms_error(out, ref) <= TOLERANCE.get(name, 1e-5)
  np.testing.assert_array_equal(np.asarray(out)[1, 23:], 0.0)  # exact zeros at padding
  np.testing.assert_array_equal(np.asarray(out)[2, 7:], 0.0)


@pytest.mark.parametrize("name,causal", _cases(need_packing=True))
def test_padded_equals_packed_equals_alone(name, causal):
  """Variants that declare supports_packing=False are checked for their clear error instead (below)."""
  total, row = sum(LENGTHS), sum(LENGTHS) + 3  # packed row with an empty tail
  q, k, v = qkv(jax.random.key(2), 1, total)
  starts = np.cumsum([0] + LENGTHS)
  pieces = [(q[:, s:e], k[:, s:e], v[:, s:e]) for s, e in zip(starts[:-1], starts[1:], strict=True)]

  alone = [
    init_apply(name, *p, Segments.from_lengths(jnp.array([n]), n), causal)[0]
    for p, n in zip(pieces, LENGTHS, strict=True)
  ]

  pad_len = max(LENGTHS) + 2
  padded_in = [
    jnp.stack([jnp.pad(p[i][0], ((0, pad_len - p[i].shape[1]), (0, 0), (0, 0))) for p in pieces])
    for i in range(3)
  ]
  padded = init_apply(name, *padded_in, Segments.from_lengths(jnp.array(LENGTHS), pad_len), causal)

  packed_in = [jnp.pad(x, ((0, 0), (0, row - total), (0, 0), (0, 0))) for x in (q, k, v)]
  packed = init_apply(name, *packed_in, packed_segments(LENGTHS, row), causal)[0]

  for i, n in enumerate(LENGTHS):
    np.testing.assert_allclose(padded[i, :n], alone[i], atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(packed[starts[i]:starts[i + 1]], alone[i], atol=2e-6, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(packed)[total:], 0.0)


@pytest.mark.parametrize("name", [n for n in NAMES if attention.capabilities(n).supports_causal])
def test_causal_outputs_ignore_the_future(name):
  q, k, v = qkv(jax.random.key(3), 2, 32)
  segments = Segments.from_lengths(jnp.array([32, 30]), 32)
  t = 17
  base = init_apply(name, q, k, v, segments, True)
  bumped = [x.at[:, t].add(3.0) for x in (q, k, v)]
  moved = init_apply(name, *bumped, segments, True)
  np.testing.assert_array_equal(np.asarray(moved)[:, :t], np.asarray(base)[:, :t])
  assert not np.allclose(np.asarray(moved)[:, t], np.asarray(base)[:, t])


@pytest.mark.parametrize("name", [n for n in NAMES if attention.capabilities(n).length_invariant])
def test_extra_padding_changes_nothing(name):
  q, k, v = qkv(jax.random.key(4), 1, 20)
  short = init_apply(name, q, k, v, Segments.from_lengths(jnp.array([20]), 20), False)
  pad = [jnp.pad(x, ((0, 0), (0, 12), (0, 0), (0, 0))) + 0.0 for x in (q, k, v)]
  pad = [x.at[:, 20:].set(5.0) for x in pad]  # garbage under the padding must not leak
  long = init_apply(name, *pad, Segments.from_lengths(jnp.array([20]), 32), False)
  np.testing.assert_allclose(long[:, :20], short, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("name,causal", _cases(need_weights=True))
def test_gradients_match_reference(name, causal):
  q, k, v = qkv(jax.random.key(5), 2, 24)
  segments = Segments.from_lengths(jnp.array([24, 13]), 24)
  w = jax.random.normal(jax.random.key(6), q.shape)
  mixer = attention.build(name)
  variables = jax.jit(mixer.init, static_argnums=5)(jax.random.key(0), q, k, v, segments, causal)

  def fast(q, k, v):
    return jnp.sum(mixer.apply(variables, q, k, v, segments, causal) * w)

  def ref(q, k, v):
    return jnp.sum(reference_output(mixer, variables, q, k, v, segments, causal) * w)

  grads = [jax.jit(jax.grad(f, (0, 1, 2)))(q, k, v) for f in (fast, ref)]
  for g_fast, g_ref in zip(*grads, strict=True):
    assert relative_rms_error(g_fast, g_ref) <= 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_undeclared_use_is_a_clear_error(name):
  caps = attention.capabilities(name)
  q, k, v = qkv(jax.random.key(7), 1, 8)
  if not caps.supports_causal:
    with pytest.raises(ValueError, match="causal"):
      init_apply(name, q, k, v, Segments.from_lengths(jnp.array([8]), 8), True)
  if not caps.supports_packing:
    with pytest.raises(ValueError, match="packed"):
      init_apply(name, q, k, v, packed_segments([4, 4], 8), False)
  if not caps.implied_weights:
    with pytest.raises(ValueError, match="no implied attention matrix"):
      init_apply(name, q, k, v, Segments.from_lengths(jnp.array([8]), 8), False, method="implied_weights")
  with pytest.raises(ValueError, match="unknown option"):
    attention.build(name, {"no_such_option": 1})
  assert caps.state_size(128, 2, 8) > 0 and caps.complexity.startswith("O(") and caps.paper


def test_unknown_attention_name_lists_choices():
  with pytest.raises(ValueError, match=r"unknown attention 'sofmax'; choose one of .*softmax"):
    attention.get("sofmax")


# bf16 inputs vs the fp32 oracle on the same (bf16-rounded) inputs: relative RMS error, stated per variant.
BF16_TOLERANCE = 3e-2
BF16_TOLERANCE_OVERRIDES: dict[str, float] = {}


@pytest.mark.parametrize("name", [n for n in NAMES if attention.capabilities(n).implied_weights])
def test_bfloat16_inputs_within_stated_tolerance(name):
  q, k, v = qkv(jax.random.key(8), 2, 32, dtype=jnp.bfloat16)
  segments = Segments.from_lengths(jnp.array([32, 19]), 32)
  mixer = attention.build(name)
  variables = jax.jit(mixer.init, static_argnums=5)(jax.random.key(0), q, k, v, segments, False)
  out = jax.jit(lambda *a: mixer.apply(variables, *a, False))(q, k, v, segments)
  assert out.dtype == jnp.bfloat16
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  ref = jax.jit(lambda *a: reference_output(mixer, variables, *a, False))(*f32, segments)
  assert relative_rms_error(out, ref) <= BF16_TOLERANCE_OVERRIDES.get(name, BF16_TOLERANCE)
