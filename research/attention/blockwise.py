"""Blockwise softmax pieces shared by the sparse families (local, longformer, bigbird, reformer).

A block of C queries attends a gathered set of K key slots under an elementwise mask built from per-slot
metadata (segment id, row position, bucket, ...), so no LxL matrix or mask exists in a fast path: memory is
O(L·K). A partial result over a key set P carries its log-normaliser, so results over disjoint key sets combine
exactly (the flash-attention / Reformer multi-round merge):

    s_ij = q_i·k_j / √D (+ bias_ij),   lse_P(i) = log Σ_{j∈P} e^{s_ij},   o_P(i) = Σ_{j∈P} e^{s_ij − lse_P(i)} v_j
    o_{P∪Q}(i) = (e^{lse_P} o_P + e^{lse_Q} o_Q) / (e^{lse_P} + e^{lse_Q})                          (P ∩ Q = ∅)

A query with no admissible key gets o = 0 and lse = −inf (never NaN, in values or gradients). The oracle side,
`dense_weights`, materialises the LxS weights for a given boolean mask (tests and `implied_weights` only).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

F32 = jnp.float32


def pad_axis(x: jax.Array, axis: int, multiple: int, value=0) -> jax.Array:
  """Pad `axis` at the end up to a multiple of `multiple` (no copy if already a multiple)."""
  pad = -x.shape[axis] % multiple
  if not pad:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  return jnp.pad(x, widths, constant_values=value)


def heads_to_blocks(x_BxLxHxD: jax.Array, block: int) -> jax.Array:
  """BxLxHxD -> BxHxNxCxD (zero-padded to N·C rows)."""
  x = pad_axis(x_BxLxHxD, 1, block)
  b, lp, h, d = x.shape
  return jnp.transpose(x, (0, 2, 1, 3)).reshape(b, h, lp // block, block, d)


def blocks_to_heads(x_BxHxNxCxD: jax.Array, length: int) -> jax.Array:
  """BxHxNxCxD -> BxLxHxD (the padding rows sliced off)."""
  b, h, n, c, d = x_BxHxNxCxD.shape
  return jnp.transpose(x_BxHxNxCxD.reshape(b, h, n * c, d), (0, 2, 1, 3))[:, :length]


def neighbours(x: jax.Array, axis: int, offsets: Sequence[int], fill=0) -> jax.Array:
  """Block n gets blocks n+o for o in `offsets` (`fill` outside the row), concatenated along axis+1.

  x: ...xNxCx... (blocks on `axis`, rows of a block on `axis`+1) -> ...xNx(len(offsets)·C)x...
  """
  n = x.shape[axis]
  lo, hi = max(0, -min(offsets)), max(0, max(offsets))
  widths = [(0, 0)] * x.ndim
  widths[axis] = (lo, hi)
  xp = jnp.pad(x, widths, constant_values=fill)
  parts = [jax.lax.slice_in_dim(xp, lo + o, lo + o + n, axis=axis) for o in offsets]
  return jnp.concatenate(parts, axis=axis + 1)


def band(block: int, offsets: Sequence[int], lo: int, hi: int) -> np.ndarray:
  """Static CxKC mask: query row c of block n may see key c' of block n+o iff lo <= i - j <= hi.

  With i = nC + c and j = (n+o)C + c', i - j = c - c' - oC does not depend on n.
  """
  c = np.arange(block)
  diff_CxKC = np.concatenate([c[:, None] - c[None, :] - o * block for o in offsets], axis=1)
  return (diff_CxKC >= lo) & (diff_CxKC <= hi)


def attend(
  q_XxCxD: jax.Array,
  k_XxKxD: jax.Array,
  v_XxKxD: jax.Array,
  mask_XxCxK: jax.Array,
  bias_XxCxK: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Masked softmax attention of each query row over its K slots; leading dims X broadcast.

  Returns (o_XxCxD fp32, lse_XxC fp32); rows with no admissible slot give o = 0, lse = -inf.
  """
  scale = q_XxCxD.shape[-1] ** -0.5
  s = jnp.einsum("...cd,...kd->...ck", q_XxCxD.astype(F32), k_XxKxD.astype(F32)) * scale
  if bias_XxCxK is not None:
    s = s + bias_XxCxK
  s = jnp.where(mask_XxCxK, s, -jnp.inf)
  m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))  # any constant cancels; this one stabilises
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  p = jnp.exp(s - m)  # exactly 0 at masked slots (and no gradient flows there)
  total = jnp.sum(p, axis=-1, keepdims=True)
  has = total > 0
  total_safe = jnp.where(has, total, 1.0)
  o = jnp.einsum("...ck,...kd->...cd", p, v_XxKxD.astype(F32)) / total_safe
  lse = jnp.where(has, m + jnp.log(total_safe), -jnp.inf)
  return o, lse[..., 0]


def merge(o_PxXxD: jax.Array, lse_PxX: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Combine P partial results over disjoint key sets (leading axis) into one exact softmax result."""
  m = jax.lax.stop_gradient(jnp.max(lse_PxX, axis=0))
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  w_PxX = jnp.exp(lse_PxX - m)  # 0 for empty parts
  total = jnp.sum(w_PxX, axis=0)
  has = total > 0
  total_safe = jnp.where(has, total, 1.0)
  o = jnp.sum(w_PxX[..., None] * o_PxXxD, axis=0) / total_safe[..., None]
  return o, jnp.where(has, m + jnp.log(total_safe), -jnp.inf)


def dense_weights(
  q_BxLxHxD: jax.Array, k_BxSxHxD: jax.Array, mask_BxHxLxS: jax.Array, bias_BxHxLxS: jax.Array | None = None
) -> jax.Array:
  """The oracle: materialised fp32 softmax weights BxHxLxS over `mask` (zero rows where nothing is admissible)."""
  scale = q_BxLxHxD.shape[-1] ** -0.5
  s = (
    jnp.einsum("blhd,bshd->bhls", q_BxLxHxD.astype(F32), k_BxSxHxD.astype(F32), precision=jax.lax.Precision.HIGHEST)
    * scale
  )
  if bias_BxHxLxS is not None:
    s = s + bias_BxHxLxS
  w = jax.nn.softmax(jnp.where(mask_BxHxLxS, s, -jnp.inf), axis=-1, where=mask_BxHxLxS)
  return jnp.where(mask_BxHxLxS, w, 0.0)
