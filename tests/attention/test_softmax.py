"""The two softmax paths (materialized with its own VJP, jax.nn.dot_product_attention) compute the same thing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.attention.masks import Segments
from research.attention.softmax import SoftmaxAttention, softmax_attention
from tests.attention.helpers import packed_segments, qkv

CASES = {
  "padded": (Segments.from_lengths(jnp.array([24, 17]), 24), False),
  "padded_causal": (Segments.from_lengths(jnp.array([24, 17]), 24), True),
  "packed": (packed_segments([9, 7, 5], 24), False),
}


def _value_and_grads(implementation, q, k, v, segments, causal):
  def loss(q, k, v):
    out = softmax_attention(q, k, v, segments, causal=causal, implementation=implementation)
    return jnp.sum(out.astype(jnp.float32) * jnp.cos(jnp.arange(out.size).reshape(out.shape)))

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)


@pytest.mark.parametrize("case", sorted(CASES))
def test_materialized_equals_dot_product_attention_values_and_gradients(case):
  segments, causal = CASES[case]
  q, k, v = qkv(jax.random.key(1), segments.segment_ids.shape[0], 24, h=2, d=8)
  (ours, ours_g), (ref, ref_g) = (_value_and_grads(impl, q, k, v, segments, causal) for impl in ("materialized", "xla"))
  np.testing.assert_allclose(ours, ref, rtol=1e-5)
  for a, b in zip(ours_g, ref_g, strict=True):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)
  out = softmax_attention(q, k, v, segments, causal=causal, implementation="materialized")
  assert np.all(np.asarray(out)[~np.asarray(segments.valid)] == 0)  # padded queries: exact zeros


def test_materialized_bfloat16_keeps_dtype_and_fp32_softmax():
  segments = Segments.from_lengths(jnp.array([32, 20]), 32)
  q, k, v = qkv(jax.random.key(2), 2, 32, h=2, d=16)
  out = softmax_attention(
    *(x.astype(jnp.bfloat16) for x in (q, k, v)), segments, causal=False, implementation="materialized"
  )
  assert out.dtype == jnp.bfloat16
  ref = softmax_attention(q, k, v, segments, causal=False, implementation="xla")
  np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=3e-2)
  grads = jax.grad(
    lambda q: jnp.sum(
      softmax_attention(
        q, k.astype(jnp.bfloat16), v.astype(jnp.bfloat16), segments, causal=False, implementation="materialized"
      )
    )
  )(q.astype(jnp.bfloat16))
  assert grads.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(grads.astype(jnp.float32))))


def test_default_is_materialized_on_cpu_and_bad_implementation_is_named():
  segments = Segments.from_lengths(jnp.array([16]), 16)
  q, k, v = qkv(jax.random.key(3), 1, 16)
  jaxpr = {
    impl: str(
      jax.make_jaxpr(
        lambda q, k, v, impl=impl: softmax_attention(q, k, v, segments, causal=False, implementation=impl)
      )(q, k, v)
    )
    for impl in (None, "materialized", "xla")
  }
  assert "custom_vjp" in jaxpr["materialized"] and "custom_vjp" not in jaxpr["xla"]
  assert jaxpr[None] == jaxpr["materialized" if jax.default_backend() == "cpu" else "xla"]
  with pytest.raises(ValueError, match="softmax implementation 'flash'; expected one of None, 'materialized'"):
    SoftmaxAttention.Config(implementation="flash")
