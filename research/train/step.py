"""Pure train and eval steps for every task kind; jit-ed (with shardings and donation) by the loop."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from research.train import objectives
from research.train.state import TrainState


def _loss_sums(params, batch, model: nn.Module, rng, deterministic: bool, extra: dict, kind: str):
  """(Σ w·loss, sums) for one (micro)batch (see objectives.loss_sums)."""
  out = model.apply(
    {"params": params, **extra}, *objectives.model_inputs(kind, batch), deterministic, rngs={"dropout": rng}
  )
  return objectives.loss_sums(kind, out, batch)


def train_step(
  state: TrainState,
  batch: dict,
  *,
  model: nn.Module,
  tx: optax.GradientTransformation,
  grad_accum: int = 1,
  kind: str = "classify",
) -> tuple[TrainState, dict]:
  """One optimizer update; with grad_accum > 1 the batch is split into micro-batches scanned in sequence.

  Gradients are of the summed loss, divided once by the total weight, so accumulation is exact (for the
  in-batch contrastive `match` kind each micro-batch is its own pool of negatives).
  """
  rng = jax.random.fold_in(state.rng, state.step)
  grad_fn = jax.value_and_grad(_loss_sums, has_aux=True)
  micro_batches = jax.tree.map(lambda x: x.reshape(grad_accum, -1, *x.shape[1:]), batch)
  first = jax.tree.map(lambda x: x[0], micro_batches)
  sums_shape = jax.eval_shape(lambda: _loss_sums(state.params, first, model, rng, False, state.extra, kind)[1])

  def micro(carry, xs):
    mb, i = xs
    (_, sums), grads = grad_fn(state.params, mb, model, jax.random.fold_in(rng, i), False, state.extra, kind)
    return jax.tree.map(jnp.add, carry, (grads, sums)), None

  zeros = (jax.tree.map(jnp.zeros_like, state.params), jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums_shape))
  (grads, sums), _ = jax.lax.scan(micro, zeros, (micro_batches, jnp.arange(grad_accum)))
  denom = jnp.maximum(sums["count"], 1.0)
  grads = jax.tree.map(lambda g: g / denom, grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state)
  metrics = {"loss": sums["loss_sum"] / denom, "accuracy": sums["correct"] / denom, "grad_norm": optax.tree.norm(grads)}
  return new_state, metrics


def eval_step(variables: dict, batch: dict, *, model: nn.Module, kind: str = "classify") -> dict:
  """Weighted sums over the batch (`variables` = TrainState.variables); the caller adds them up over the split."""
  extra = {k: v for k, v in variables.items() if k != "params"}
  _, sums = _loss_sums(variables["params"], batch, model, jax.random.PRNGKey(0), True, extra, kind)
  return sums
