"""Short depthwise convolution over the sequence, segment-aware (H3 / Based / GLA use one before the mixer)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.attention.masks import Segments


def segment_shift(x_BxLxE: jax.Array, segments: Segments, offset: int) -> jax.Array:
  """x[i + offset] where token i + offset exists and shares i's segment, else 0 (padding never leaks)."""
  length = x_BxLxE.shape[1]
  if abs(offset) >= length:
    return jnp.zeros_like(x_BxLxE)
  ids = segments.segment_ids
  if offset > 0:
    shifted = jnp.pad(x_BxLxE[:, offset:], ((0, 0), (0, offset), (0, 0)))
    ids_shifted = jnp.pad(ids[:, offset:], ((0, 0), (0, offset)))
  elif offset < 0:
    shifted = jnp.pad(x_BxLxE[:, :offset], ((0, 0), (-offset, 0), (0, 0)))
    ids_shifted = jnp.pad(ids[:, :offset], ((0, 0), (-offset, 0)))
  else:
    shifted, ids_shifted = x_BxLxE, ids
  same = (ids_shifted == ids) & (ids > 0)
  return jnp.where(same[..., None], shifted, 0).astype(x_BxLxE.dtype)


class ShortConv(nn.Module):
  """y_i = Σ_o w_o ⊙ x_{i+o} over taps o (causal: o ∈ [-(K-1), 0]; else centred), per channel, + bias."""

  kernel_size: int
  causal: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxLxE: jax.Array, segments: Segments) -> jax.Array:
    k, e = self.kernel_size, x_BxLxE.shape[-1]
    offsets = range(-(k - 1), 1) if self.causal else range(-((k - 1) // 2), k // 2 + 1)
    init = nn.initializers.normal(1.0 / k)
    w_KxE = self.param("kernel", nn.with_logical_partitioning(init, (None, "embed")), (k, e))
    b_E = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (e,))
    y = sum(segment_shift(x_BxLxE, segments, o) * w_KxE[i].astype(self.dtype) for i, o in enumerate(offsets))
    return (y + b_E.astype(self.dtype)).astype(self.dtype)
