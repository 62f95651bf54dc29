"""AdamW with warmup + cosine or rsqrt decay and global-norm clipping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("cosine", "rsqrt", "constant")


def learning_rate_schedule(peak: float, warmup: int, total: int, kind: str) -> optax.Schedule:
  """Linear warmup from 0 reaching `peak` at step `warmup`, then cosine to 0 at `total`, rsqrt, or constant."""
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, max(warmup, 1), max(total, warmup + 1), end_value=0.0)
  if kind == "rsqrt":
    w = max(warmup, 1)
    return lambda step: peak * jnp.minimum(step / w, jnp.sqrt(w / jnp.maximum(step, w)))
  if kind == "constant":
    return optax.linear_schedule(0.0, peak, max(warmup, 1))
  raise ValueError(f"train.schedule={kind!r}; expected one of {', '.join(SCHEDULES)}")


def _decay_mask(params):
  """Weight decay on kernels and embeddings only (not biases, norms or position tables)."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: getattr(path[-1], "key", None) in ("kernel", "embedding"), params
  )


def make_optimizer(train_cfg) -> optax.GradientTransformation:
  schedule = learning_rate_schedule(
    train_cfg.learning_rate, train_cfg.warmup_steps, train_cfg.num_steps, train_cfg.schedule
  )
  return optax.chain(
    optax.clip_by_global_norm(train_cfg.clip_norm),
    optax.adamw(schedule, b1=0.9, b2=0.98, eps=1e-9, weight_decay=train_cfg.weight_decay, mask=_decay_mask),
  )
