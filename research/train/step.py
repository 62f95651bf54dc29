"""Pure train and eval steps; jit-ed (with shardings and donation) by the loop."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from research.attention.masks import Segments
from research.train.state import TrainState


def _loss_sums(params, batch, model: nn.Module, rng, deterministic: bool, extra: dict):
  """(Σ w·CE, (Σ w·correct, Σ w)) for one (micro)batch."""
  logits_BxC = model.apply(
    {"params": params, **extra}, batch["tokens"], Segments.from_batch(batch), deterministic, rngs={"dropout": rng})
  ce_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC.astype(jnp.float32), batch["targets"])
  w_B = batch["weights"]
  correct_B = (jnp.argmax(logits_BxC, -1) == batch["targets"]).astype(jnp.float32)
  return jnp.sum(ce_B * w_B), (jnp.sum(correct_B * w_B), jnp.sum(w_B))


def train_step(state: TrainState, batch: dict, *, model: nn.Module, tx: optax.GradientTransformation,
               grad_accum: int = 1) -> tuple[TrainState, dict]:
  """One optimizer update; with grad_accum > 1 the batch is split into micro-batches scanned in sequence.

  Gradients are of the summed loss, divided once by the total weight, so accumulation is exact.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  grad_fn = jax.value_and_grad(_loss_sums, has_aux=True)

  def micro(carry, xs):
    mb, i = xs
    (loss, (correct, weight)), grads = grad_fn(state.params, mb, model, jax.random.fold_in(rng, i), False, state.extra)
    return jax.tree.map(jnp.add, carry, (grads, loss, correct, weight)), None

  zeros = (jax.tree.map(jnp.zeros_like, state.params), 0.0, 0.0, 0.0)
  micro_batches = jax.tree.map(lambda x: x.reshape(grad_accum, -1, *x.shape[1:]), batch)
  (grads, loss, correct, weight), _ = jax.lax.scan(micro, zeros, (micro_batches, jnp.arange(grad_accum)))
  denom = jnp.maximum(weight, 1.0)
  grads = jax.tree.map(lambda g: g / denom, grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state)
  metrics = {"loss": loss / denom, "accuracy": correct / denom, "grad_norm": optax.tree.norm(grads)}
  return new_state, metrics


def eval_step(variables: dict, batch: dict, *, model: nn.Module) -> dict:
  """Weighted sums over the batch (`variables` = TrainState.variables); the caller adds them up over the split."""
  extra = {k: v for k, v in variables.items() if k != "params"}
  loss, (correct, weight) = _loss_sums(variables["params"], batch, model, jax.random.PRNGKey(0), True, extra)
  return {"loss_sum": loss, "correct": correct, "count": weight}
