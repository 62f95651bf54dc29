"""One train step on 1 device == the same step on 8 devices under data, FSDP, tensor and sequence-parallel meshes;
parameter placement; mesh configs."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from research.models.encoder import EncoderConfig
from research.models.heads import Classifier
from research.train.optimizer import make_optimizer
from research.train.sharding import (
  LOGICAL_RULES,
  MESH_AXES,
  batch_sharding,
  make_mesh,
  mesh_from_config,
  resolve_mesh_shape,
)
from research.train.state import create_train_state
from research.train.step import train_step
from tests.train.common import synthetic_batch, tiny_config

# Expected placement written out by hand from the rules table (layers, embed, heads, kv, mlp, vocab).
EXPECTED = {
  ("encoder", "embed", "embedding"): P("tensor", "fsdp"),
  ("encoder", "stack", "layers", "query", "kernel"): P(None, "fsdp", "tensor", None),
  ("encoder", "stack", "layers", "query", "bias"): P(None, "tensor", None),
  ("encoder", "stack", "layers", "out", "kernel"): P(None, "tensor", None, "fsdp"),
  ("encoder", "stack", "layers", "mlp_in", "kernel"): P(None, "fsdp", "tensor"),
  ("encoder", "stack", "layers", "mlp_out", "kernel"): P(None, "tensor", "fsdp"),
  ("encoder", "stack", "layers", "attn_norm", "scale"): P(None, "fsdp"),
  ("encoder", "pos_embedding"): P(None, "fsdp"),
}


def _one_step(attention: str, mesh_shape, devices):
  config = tiny_config(f"attention={attention}")
  cfg = EncoderConfig(vocab_size=17, max_len=32, d_model=32, num_heads=4, num_layers=2, mlp_dim=64, attention=attention)
  model, tx = Classifier(cfg, 10), make_optimizer(config.train)
  batch = synthetic_batch()
  mesh = make_mesh(mesh_shape, devices)
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    state, shardings = create_train_state(model, tx, 0, batch, mesh)
    step = jax.jit(
      functools.partial(train_step, model=model, tx=tx),
      in_shardings=(shardings, batch_sharding(mesh)),
      out_shardings=(shardings, None),
      donate_argnums=0,
    )
    state, metrics = step(state, jax.device_put(batch, batch_sharding(mesh)))
    return state, jax.device_get(metrics), model, batch


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_sharded_step_equals_single_device(attention):
  assert len(jax.devices()) == 8, "tests/conftest.py must fake 8 CPU devices"
  ref_state, ref_metrics, model, batch = _one_step(attention, (1, 1, 1), jax.devices()[:1])
  # data / data+FSDP+tensor / FSDP+tensor / sequence-parallel (the attention in shard_map over `seq`) / all four
  for shape in [(8, 1, 1, 1), (2, 2, 2, 1), (1, 4, 2, 1), (1, 2, 1, 4), (2, 1, 2, 2)]:
    state, metrics, _, _ = _one_step(attention, shape, jax.devices())
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), state.params, ref_state.params)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), state.opt_state, ref_state.opt_state
    )

    # every parameter sits where the rules table puts its logical axes
    logical = nn.get_partition_spec(jax.eval_shape(model.init, jax.random.key(0), batch["tokens"], _segments(batch)))[
      "params"
    ]
    flat_logical = dict(jax.tree_util.tree_flatten_with_path(logical, is_leaf=lambda x: isinstance(x, P))[0])
    for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
      want = nn.logical_to_mesh_axes(flat_logical[path], LOGICAL_RULES)
      assert leaf.sharding.spec == want, (path, leaf.sharding.spec, want)
      assert leaf.sharding.mesh.shape == dict(zip(MESH_AXES, shape, strict=True))
      key = tuple(p.key for p in path)
      if key in EXPECTED:
        assert leaf.sharding.spec == EXPECTED[key], (key, leaf.sharding.spec)
    assert all(
      key in {tuple(p.key for p in path) for path, _ in jax.tree_util.tree_flatten_with_path(state.params)[0]}
      for key in EXPECTED
    )


def _segments(batch):
  from research.attention.masks import Segments

  return Segments.from_batch(batch)


def test_mesh_shape_errors_are_clear():
  assert resolve_mesh_shape((-1, 2, 2), 8) == (2, 2, 2, 1)  # the positional form before the `seq` axis
  assert resolve_mesh_shape((1, 1, 2, -1), 8) == (1, 1, 2, 4)
  with pytest.raises(ValueError, match=r"mesh.shape=\(3, 1, 1, 1\) uses 3 devices but 8 are present"):
    resolve_mesh_shape((3, 1, 1), 8)
  with pytest.raises(ValueError, match="cannot fill 8 devices"):
    resolve_mesh_shape((-1, 3, 1), 8)
  with pytest.raises(ValueError, match="expected 4 positive sizes"):
    resolve_mesh_shape((2, 4), 8)


def test_mesh_from_named_config_sizes():
  import ml_collections

  def mesh(**sizes):
    return mesh_from_config(
      ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1, "seq": 1, "shape": None, **sizes})
    )

  assert dict(mesh().shape) == {"data": 8, "fsdp": 1, "tensor": 1, "seq": 1}
  assert dict(mesh(data=2, fsdp=-1, seq=2).shape) == {"data": 2, "fsdp": 2, "tensor": 1, "seq": 2}
  assert dict(mesh(shape=(2, 4, 1)).shape) == {"data": 2, "fsdp": 4, "tensor": 1, "seq": 1}
  with pytest.raises(ValueError, match=r"mesh.data=3,mesh.fsdp=1,mesh.tensor=1,mesh.seq=1 uses 3 devices but 8"):
    mesh(data=3)
  with pytest.raises(ValueError, match=r"mesh.shape=\(2, 4, 1\) and mesh.data/fsdp/tensor/seq=\(2, 1, 1, 1\) are both"):
    mesh(data=2, shape=(2, 4, 1))
  with pytest.raises(ValueError, match=r"mesh.seq='2'; expected an integer"):
    mesh(seq="2")
