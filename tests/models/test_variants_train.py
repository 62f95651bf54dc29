"""Every registered variant trains inside the encoder: a few steps on tiny ListOps reduce the loss."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import pytest

import research.attention as attention
from research.attention.masks import Segments
from research.data.pipeline import build_task, train_dataset
from research.models.heads import Classifier
from research.train.loop import encoder_config
from research.train.optimizer import make_optimizer
from research.train.state import TrainState
from research.train.step import train_step
from tests.train.common import tiny_config


@pytest.mark.parametrize("name", attention.names())
def test_a_few_steps_reduce_the_loss(name):
  config = tiny_config(
    f"attention={name},train.learning_rate=0.003,train.warmup_steps=1,steps=12,"
    "train.schedule=constant,model.num_layers=1,data.max_length=32"
  )
  task = build_task(config.task, config.data.to_dict())
  model = Classifier(encoder_config(config, task.seq_len, task.vocab_size), task.num_classes)
  tx = make_optimizer(config.train)
  batch = train_dataset(task.splits["train"], config.train.batch_size, seed=0)[0]
  variables = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), batch["tokens"], Segments.from_batch(batch)))
  variables = dict(variables)
  params = variables.pop("params")
  state = TrainState(jax.numpy.zeros((), jax.numpy.int32), params, tx.init(params), jax.random.PRNGKey(0), variables)
  step = jax.jit(functools.partial(train_step, model=model, tx=tx))
  losses = []
  for _ in range(12):  # the same batch: the loss must go down
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert all(map(math.isfinite, losses)), losses
  assert losses[-1] < 0.9 * losses[0], (name, losses)
