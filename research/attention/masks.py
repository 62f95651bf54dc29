"""Segments: padding and packing for every mixer.

`segment_ids_BxL`: 0 marks padding; positions with equal non-zero ids belong to one sequence and attend
only to each other, so several short examples can share one row ("packing"). Padding must be at the end
of a row (right-padded). `max_segments` is a static upper bound on the ids (1 = one sequence per row).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Segments:
  segment_ids: jax.Array  # BxL int32, 0 = padding
  positions: jax.Array  # BxL int32, position inside its segment
  max_segments: int = flax.struct.field(pytree_node=False, default=1)

  @classmethod
  def from_lengths(cls, lengths_B: jax.Array, length: int) -> Segments:
    """One right-padded sequence per row."""
    idx_BxL = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (lengths_B.shape[0], length))
    valid_BxL = idx_BxL < lengths_B[:, None]
    return cls(valid_BxL.astype(jnp.int32), jnp.where(valid_BxL, idx_BxL, 0), 1)

  @classmethod
  def from_batch(cls, batch: dict) -> Segments:
    """From a data batch's `segment_ids` and `positions` (one sequence per row unless `max_segments` is set)."""
    return cls(batch["segment_ids"], batch["positions"], int(batch.get("max_segments", 1)))

  @property
  def valid(self) -> jax.Array:
    return self.segment_ids > 0

  def lengths(self) -> jax.Array:
    """Number of non-padding tokens per row, B int32."""
    return jnp.sum(self.valid, axis=-1, dtype=jnp.int32)

  def one_hot(self, dtype=jnp.float32) -> jax.Array:
    """BxLxG membership of each token in segment g+1 (all-zero rows at padding)."""
    return jax.nn.one_hot(self.segment_ids - 1, self.max_segments, dtype=dtype)


def attention_mask(segments: Segments, causal: bool) -> jax.Array:
  """Bx1xLxL boolean: query i may attend key j (same non-zero segment; j <= i if causal)."""
  ids_BxL = segments.segment_ids
  mask_BxLxL = (ids_BxL[:, :, None] == ids_BxL[:, None, :]) & (ids_BxL[:, None, :] > 0)
  if causal:
    length = ids_BxL.shape[1]
    mask_BxLxL &= jnp.tril(jnp.ones((length, length), dtype=bool))
  return mask_BxLxL[:, None]


def zero_padding(out_BxLxHxD: jax.Array, segments: Segments) -> jax.Array:
  """Exact zeros at padded query positions."""
  return jnp.where(segments.valid[:, :, None, None], out_BxLxHxD, 0).astype(out_BxLxHxD.dtype)
