"""Per-kind losses and metrics against direct numpy references; one jit-ed train step per kind."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.data.pipeline import eval_batches, train_dataset
from research.data.tasks.base import Task
from research.models.encoder import EncoderConfig
from research.train import objectives
from research.train.sharding import LOGICAL_RULES, make_mesh
from research.train.state import create_train_state
from research.train.step import eval_step, train_step


def _log_softmax(x, axis=-1):
  x = x - x.max(axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis, keepdims=True))


def test_match_loss_is_symmetric_in_batch_cross_entropy_without_padding_candidates():
  rng = np.random.default_rng(0)
  za, zb = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
  za /= np.linalg.norm(za, axis=-1, keepdims=True)
  zb /= np.linalg.norm(zb, axis=-1, keepdims=True)
  w = np.array([1, 1, 1, 1, 0, 0], np.float32)  # two padding rows
  loss, sums = objectives.loss_sums("match", (jnp.asarray(za), jnp.asarray(zb), jnp.float32(5.0)), {"weights": w})
  s = 5.0 * za[:4] @ zb[:4].T  # padding rows are neither queries nor candidates
  want = 0.5 * (-np.diag(_log_softmax(s, 1)) - np.diag(_log_softmax(s, 0)))
  np.testing.assert_allclose(float(loss), want.sum(), rtol=1e-5)
  assert float(sums["count"]) == 4
  assert float(sums["correct"]) == float(np.sum(np.argmax(s, 1) == np.arange(4)))


def test_regression_metrics_match_numpy():
  rng = np.random.default_rng(1)
  pred, t = rng.normal(size=40).astype(np.float32), rng.normal(size=40).astype(np.float32)
  w = (np.arange(40) < 33).astype(np.float32)
  halves = [
    objectives.loss_sums(
      "regress", jnp.asarray(pred[i : i + 20, None]), {"targets": t[i : i + 20], "weights": w[i : i + 20]}
    )[1]
    for i in (0, 20)
  ]
  m = objectives.finalize("regress", jax.tree.map(lambda a, b: np.asarray(a) + np.asarray(b), *halves))
  np.testing.assert_allclose(m["mse"], np.mean((pred[:33] - t[:33]) ** 2), rtol=1e-5)
  np.testing.assert_allclose(m["pearson"], np.corrcoef(pred[:33], t[:33])[0, 1], rtol=1e-4)
  np.testing.assert_allclose(m["accuracy"], np.mean(np.sign(pred[:33]) == np.sign(t[:33])), rtol=1e-6)


def test_token_loss_counts_only_weighted_positions():
  logits = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5, 7)), jnp.float32)
  targets = np.array([[1, 2, 3, 4, 5], [6, 0, 1, 2, 3]], np.int32)
  w = np.array([[0, 1, 0, 1, 0], [1, 0, 0, 0, 0]], np.float32)
  loss, sums = objectives.loss_sums("tokens", logits, {"targets": targets, "weights": w})
  lp = _log_softmax(np.asarray(logits))
  want = -(lp[0, 1, 2] + lp[0, 3, 4] + lp[1, 0, 6])
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  assert float(sums["count"]) == 3


def _toy_task(kind: str) -> Task:
  rng = np.random.default_rng(0)
  n, length = 12, 10
  split = {"tokens": rng.integers(5, 30, (n, length)).astype(np.int32), "lengths": rng.integers(4, 11, n)}
  if kind in ("pair", "match"):
    split |= {"tokens_b": rng.integers(5, 30, (n, length)).astype(np.int32), "lengths_b": rng.integers(4, 11, n)}
  if kind in ("classify", "pair"):
    split["targets"] = rng.integers(0, 3, n).astype(np.int32)
  elif kind == "regress":
    split["targets"] = rng.normal(size=n).astype(np.float32)
  elif kind == "tokens":
    split["targets"] = split["tokens"].copy()
    split["weights"] = (rng.random((n, length)) < 0.3).astype(np.float32)
  return Task("toy", kind, {"train": split, "val": split, "test": split}, 32, length, 3, 0.0)


@pytest.mark.parametrize("kind", objectives.KINDS)
def test_every_kind_trains_one_step_and_evaluates_exactly(kind):
  task = _toy_task(kind)
  cfg = EncoderConfig(vocab_size=32, max_len=10, d_model=32, num_heads=2, num_layers=1, mlp_dim=64)
  model, tx = objectives.build_model(kind, cfg, task.num_classes, "cls"), optax.adam(1e-2)
  ds = train_dataset(task, 4, seed=0)
  mesh = make_mesh((-1, 1, 1))
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    state, _ = create_train_state(model, tx, 0, ds[0], mesh, kind)
    step = jax.jit(functools.partial(train_step, model=model, tx=tx, kind=kind))
    new_state, metrics = step(state, ds[0])
    assert np.isfinite(float(metrics["loss"])) and int(new_state.step) == 1
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, new_state.params))
    assert any(changed)
    # exact evaluation: batches of 8 over 12 rows (4 padding rows) equal one batch of exactly the 12 rows
    ev = jax.jit(functools.partial(eval_step, model=model, kind=kind))
    parts = [jax.device_get(ev(new_state.variables, b)) for b in eval_batches(task.splits["val"], 8)]
    whole = jax.device_get(ev(new_state.variables, next(eval_batches(task.splits["val"], 12))))
  total = jax.tree.map(lambda *x: sum(x), *parts)
  if kind != "match":  # in-batch negatives depend on the pool, so only the other kinds are pool-independent
    for k in whole:
      np.testing.assert_allclose(total[k], whole[k], rtol=2e-5, atol=1e-5)
  expect = task.splits["val"]["weights"].sum() if kind == "tokens" else 12
  assert float(total["count"]) == expect
