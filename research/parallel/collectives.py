"""What a shard needs from the other shards of one mesh axis (call inside `jax.shard_map`).

Shards are numbered 0..n−1 along the axis (`jax.lax.axis_index`); with the length split over the axis, shard i holds
tokens [i·l, (i+1)·l) of every row. Segment ids are global per row, so a packed sequence that crosses a shard
boundary has the same id on both sides; these helpers turn shard-local segment facts into global ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from research.attention.masks import Segments


def from_shard(x: Any, axis: str, offset: int) -> Any:
  """On every shard i, the pytree x of shard i − offset (+1: the previous shard, −1: the next), zeros where none."""
  n = jax.lax.axis_size(axis)
  return jax.lax.ppermute(x, axis, [(i, i + offset) for i in range(n) if 0 <= i + offset < n])


def exclusive_scan(combine: Callable[[Any, Any], Any], x: Any, identity: Any, axis: str, *, reverse: bool = False):
  """y_i = x_0 ∘ x_1 ∘ … ∘ x_{i−1} across the shards of `axis`, `identity` on shard 0 (reverse=True scans from the
  last shard: y_i = x_{n−1} ∘ … ∘ x_{i+1}).

  `combine(a, b)` ("a, then b") must be associative; x and identity are pytrees of one structure. Hillis–Steele:
  ⌈log₂ n⌉ rounds of (ppermute by 2^r, combine), then a shift by one shard; O(state) memory per shard.
  """
  n = jax.lax.axis_size(axis)
  rank = jax.lax.axis_index(axis)
  rank = n - 1 - rank if reverse else rank  # place in scan order

  def preceding(y, d):  # y of the shard d places earlier in scan order; identity where there is none
    got = from_shard(y, axis, -d if reverse else d)
    return jax.tree.map(lambda g, e: jnp.where(rank >= d, g, e), got, identity)

  d = 1
  while d < n:
    x = combine(preceding(x, d), x)
    d *= 2
  return preceding(x, 1)


def with_halo(x_BxLx___: jax.Array, axis: str, left: int, right: int) -> jax.Array:
  """x with the last `left` tokens of the previous shard before it and the first `right` tokens of the next shard
  after it: Bx(left+L+right)x…, zeros (i.e. padding) beyond the first and the last shard."""
  length = x_BxLx___.shape[1]
  if max(left, right) > length:
    raise ValueError(
      f"a halo of {max(left, right)} tokens needs more than one neighbouring shard (each holds "
      f"{length}); use fewer shards along {axis!r}"
    )
  parts = [from_shard(x_BxLx___[:, length - left :], axis, 1)] if left else []
  parts.append(x_BxLx___)
  if right:
    parts.append(from_shard(x_BxLx___[:, :right], axis, -1))
  return jnp.concatenate(parts, axis=1)


def halo_segments(segments: Segments, axis: str, left: int, right: int) -> Segments:
  """The shard's Segments with halos of segment ids (positions are not exchanged: zero in the halo)."""
  ids = with_halo(segments.segment_ids, axis, left, right)
  positions = jnp.pad(segments.positions, ((0, 0), (left, right)))
  return Segments(ids, positions, segments.max_segments)


def segment_positions(segments: Segments, axis: str) -> tuple[jax.Array, jax.Array]:
  """`decay.segment_positions` across shards: (position inside its segment, its segment's length), BxL int32, from
  per-segment token counts (an exclusive scan for the tokens before this shard, a psum for the total)."""
  onehot_BxLxG = segments.one_hot(jnp.int32)
  count_BxG = jnp.sum(onehot_BxLxG, axis=1)
  before_BxG = exclusive_scan(jnp.add, count_BxG, jnp.zeros_like(count_BxG), axis)
  position_BxL = jnp.sum(onehot_BxLxG * (jnp.cumsum(onehot_BxLxG, axis=1) + before_BxG[:, None]), axis=-1) - 1
  length_BxL = jnp.einsum("blg,bg->bl", onehot_BxLxG, jax.lax.psum(count_BxG, axis))
  return jnp.where(segments.valid, position_BxL, 0), length_BxL


def segment_max(x_BxLxH: jax.Array, segments: Segments, axis: str, *, causal: bool) -> jax.Array:
  """Per valid token, max of x over its segment's tokens on every shard (causal: on this shard and the earlier ones)
  and x itself; padding keeps x. With x a shard-local segment max (running max if causal) this is the global one."""
  member_BxLxGx1 = (segments.one_hot() > 0)[..., None]
  local_BxGxH = jnp.max(jnp.where(member_BxLxGx1, x_BxLxH[:, :, None], -jnp.inf), axis=1)
  if causal:
    other_BxGxH = exclusive_scan(jnp.maximum, local_BxGxH, jnp.full_like(local_BxGxH, -jnp.inf), axis)
  else:
    other_BxGxH = jax.lax.pmax(local_BxGxH, axis)
  index_BxLx1 = jnp.clip(segments.segment_ids - 1, 0, segments.max_segments - 1)[..., None]
  own_BxLxH = jnp.take_along_axis(other_BxGxH, index_BxLx1, axis=1)
  return jnp.where(segments.valid[..., None], jnp.maximum(x_BxLxH, own_BxLxH), x_BxLxH)
