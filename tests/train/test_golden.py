"""Golden one-step tests: the first training loss of a tiny config, pinned under the lock file."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from research.data.pipeline import build_task, train_dataset
from research.models.heads import Classifier
from research.train.loop import encoder_config
from research.train.optimizer import make_optimizer
from research.train.sharding import LOGICAL_RULES, make_mesh
from research.train.state import create_train_state
from research.train.step import train_step
from tests.train.common import tiny_config

# Recorded with the committed requirements.lock (jax 0.10.2, flax 0.12.8, optax 0.2.8) on CPU.
# The classifier's output layer starts at zero (loss ln 10 at step 0); a large learning rate makes the
# losses of steps 2 and 3 depend strongly on every parameter of the encoder.
GOLDEN = {  # losses at steps 2 and 3
  "softmax": (2.3015871047973633, 2.2761223316192627),
  "linear": (2.3082382678985596, 2.3394856452941895),
}


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_early_losses_are_pinned(attention):
  config = tiny_config(f"attention={attention},train.learning_rate=0.01,train.warmup_steps=1")
  task = build_task(config.task, config.data.to_dict())
  model = Classifier(encoder_config(config, task.seq_len, task.vocab_size), task.num_classes)
  tx = make_optimizer(config.train)
  ds = train_dataset(task.splits["train"], config.train.batch_size, seed=config.seed)
  mesh = make_mesh((1, 1, 1), jax.devices()[:1])
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    state, _ = create_train_state(model, tx, config.seed, ds[0], mesh)
    step = jax.jit(functools.partial(train_step, model=model, tx=tx))
    losses = []
    for i in range(4):
      state, metrics = step(state, ds[i])
      losses.append(float(metrics["loss"]))
  assert losses[0] == pytest.approx(np.log(10), rel=1e-6)
  losses = tuple(losses[2:])
  np.testing.assert_allclose(losses, GOLDEN[attention], rtol=1e-5)
