"""Train-step details: exact gradient accumulation, schedules, exact evaluation over a partial last batch."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.attention.masks import Segments
from research.data.pipeline import eval_batches
from research.models.encoder import EncoderConfig
from research.models.heads import Classifier
from research.train.optimizer import learning_rate_schedule, make_optimizer
from research.train.state import TrainState
from research.train.step import eval_step, train_step
from tests.train.common import synthetic_batch, tiny_config


def test_gradient_accumulation_is_exact():
  config = tiny_config("attention=linear")
  model = Classifier(
    EncoderConfig(vocab_size=17, max_len=32, d_model=32, num_heads=4, num_layers=1, mlp_dim=64, attention="linear"), 10
  )
  tx = make_optimizer(config.train)
  batch = synthetic_batch(batch=8)
  batch["weights"] = np.array([1, 1, 0, 1, 1, 1, 0.5, 1], np.float32)  # unequal weights across micro-batches
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), batch["tokens"], Segments.from_batch(batch)))
  state = TrainState(jnp.zeros((), jnp.int32), params["params"], tx.init(params["params"]), jax.random.PRNGKey(0))
  outs = [jax.jit(functools.partial(train_step, model=model, tx=tx, grad_accum=k))(state, batch) for k in (1, 2, 4)]
  for new_state, metrics in outs[1:]:
    np.testing.assert_allclose(metrics["loss"], outs[0][1]["loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], outs[0][1]["grad_norm"], rtol=1e-5)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), new_state.params, outs[0][0].params
    )


@pytest.mark.parametrize("kind", ["cosine", "rsqrt", "constant"])
def test_schedules_warm_up_then_follow_their_shape(kind):
  lr = learning_rate_schedule(1.0, 10, 100, kind)
  values = np.array([float(lr(s)) for s in range(100)])
  assert values[0] == 0.0 < values[5] < values[9] < 1.0
  np.testing.assert_allclose(values[10], 1.0, rtol=1e-6)
  if kind == "cosine":
    assert values[-1] < 0.01
  if kind == "rsqrt":
    np.testing.assert_allclose(values[40], np.sqrt(10 / 40), rtol=1e-5)
  if kind == "constant":
    np.testing.assert_allclose(values[10:], 1.0)


def test_evaluation_counts_every_example_once():
  split = {  # 10 examples, batch 4 -> batches of 4, 4, 2 (+2 padding rows of weight 0)
    "tokens": np.tile(np.arange(12, dtype=np.int32), (10, 1)) % 17,
    "lengths": np.arange(3, 13, dtype=np.int32),
    "targets": np.arange(10, dtype=np.int32) % 10,
  }
  batches = list(eval_batches(split, 4))
  assert [b["weights"].tolist() for b in batches][-1] == [1, 1, 0, 0]
  assert sum(float(b["weights"].sum()) for b in batches) == 10
  model = Classifier(EncoderConfig(vocab_size=17, max_len=12, d_model=32, num_heads=4, num_layers=1, mlp_dim=64), 10)
  variables = model.init(jax.random.key(0), batches[0]["tokens"], Segments.from_batch(batches[0]))
  params = nn.meta.unbox(variables)["params"]
  sums = [jax.jit(functools.partial(eval_step, model=model))({"params": params}, b) for b in batches]
  assert float(sum(s["count"] for s in sums)) == 10.0
  whole = {k: np.concatenate([b[k] for b in batches])[:10] for k in batches[0]}
  logits = model.apply({"params": params}, whole["tokens"], Segments.from_batch(whole))
  want = float(np.sum(np.argmax(logits, -1) == whole["targets"]))
  assert float(sum(s["correct"] for s in sums)) == want
