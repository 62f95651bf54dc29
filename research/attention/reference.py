"""The oracle: materialized fp32 attention from a variant's implied weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def reference_attention(weights_BxHxLxS: jax.Array, v_BxSxHxD: jax.Array) -> jax.Array:
  """out[b,l,h] = sum_s A[b,h,l,s] v[b,s,h] in fp32 at highest matmul precision."""
  return jnp.einsum(
    "bhls,bshd->blhd",
    weights_BxHxLxS.astype(jnp.float32),
    v_BxSxHxD.astype(jnp.float32),
    precision=jax.lax.Precision.HIGHEST,
  )


def relative_rms_error(x: jax.Array, ref: jax.Array) -> float:
  """||x - ref||_2 / ||ref||_2 over all entries, in fp32."""
  x, ref = jnp.asarray(x, jnp.float32), jnp.asarray(ref, jnp.float32)
  return float(jnp.sqrt(jnp.sum((x - ref) ** 2) / jnp.maximum(jnp.sum(ref**2), 1e-30)))
