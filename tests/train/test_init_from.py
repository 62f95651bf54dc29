"""train.init_from: the pretrained encoder (params and random features) lands exactly in the new model."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from research.models.encoder import EncoderConfig
from research.train import init_from
from research.train.checkpoint import Checkpointer
from research.train.objectives import build_model
from research.train.sharding import LOGICAL_RULES, make_mesh
from research.train.state import create_train_state
from tests.train.common import synthetic_batch


def _state(kind: str, vocab: int, seed: int, attention: str = "linear", d_model: int = 32):
  cfg = EncoderConfig(
    vocab_size=vocab, max_len=32, d_model=d_model, num_heads=4, num_layers=2, mlp_dim=64, attention=attention
  )
  model = build_model(kind, cfg, 10)
  batch = synthetic_batch(length=32, vocab=vocab)
  if kind == "tokens":
    batch = {**batch, "targets": batch["tokens"], "weights": np.ones_like(batch["tokens"], np.float32)}
  mesh = make_mesh((-1, 1, 1))
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    state, _ = create_train_state(model, optax.adam(1e-3), seed, batch, mesh, kind)
  return state


def _pretrained_run(tmp_path, vocab: int, id_offset: int = 0, attention: str = "linear", d_model: int = 32):
  state = _state("tokens", vocab, seed=1, attention=attention, d_model=d_model)
  ckpt = Checkpointer(tmp_path / "checkpoints", keep_last=2, best_metric="val_accuracy")
  ckpt.manager.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
  ckpt.wait()
  ckpt.close()
  (tmp_path / "summary.json").write_text(json.dumps({"best_step": 7, "id_offset": id_offset}))
  return state


def _leaves(tree) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_graft_copies_the_encoder_and_keeps_the_head(tmp_path):
  pre = _pretrained_run(tmp_path / "linear-seed3", vocab=40)
  fresh = _state("classify", vocab=40, seed=0)
  grafted, info = init_from.graft(fresh, str(tmp_path / "{variant}-seed{seed}"), "linear", 3, vocab_size=40)
  assert info == {"path": str(tmp_path / "linear-seed3"), "step": 7, "id_offset": 0}
  want, got = _leaves(pre.params["backbone"]), _leaves(grafted.params["encoder"])
  assert want.keys() == got.keys() and len(want) > 5
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  for head in ("pre_logits", "logits"):  # the head stays freshly initialised
    for k, v in _leaves(fresh.params[head]).items():
      np.testing.assert_array_equal(_leaves(grafted.params[head])[k], v)
  a = jax.tree.leaves(grafted.params["encoder"])[0]
  assert a.sharding == jax.tree.leaves(fresh.params["encoder"])[0].sharding


def test_id_offset_maps_embedding_rows(tmp_path):
  pre = _pretrained_run(tmp_path / "run", vocab=17 + 4, id_offset=4)
  fresh = _state("classify", vocab=17, seed=0)
  grafted, _ = init_from.graft(fresh, str(tmp_path / "run"), "linear", 0, vocab_size=17)
  old = np.asarray(pre.params["backbone"]["embed"]["embedding"])
  new = np.asarray(grafted.params["encoder"]["embed"]["embedding"])
  np.testing.assert_array_equal(new[0], old[0])  # padding row
  np.testing.assert_array_equal(new[1:17], old[5:21])  # task id i is pretraining id i + 4
  np.testing.assert_array_equal(new[17:], np.asarray(fresh.params["encoder"]["embed"]["embedding"])[17:])


def test_random_features_are_copied(tmp_path):
  pre = _pretrained_run(tmp_path / "run", vocab=40, attention="performer")
  fresh = _state("classify", vocab=40, seed=0, attention="performer")
  assert fresh.extra, "performer keeps its random features in a non-trained collection"
  grafted, _ = init_from.graft(fresh, str(tmp_path / "run"), "performer", 0, vocab_size=40)
  (collection,) = fresh.extra
  want, got = _leaves(pre.extra[collection]["backbone"]), _leaves(grafted.extra[collection]["encoder"])
  assert want.keys() == got.keys()
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])
  assert any(not np.array_equal(v, _leaves(fresh.extra[collection]["encoder"])[k]) for k, v in want.items())


def test_mismatches_are_named(tmp_path):
  _pretrained_run(tmp_path / "wide", vocab=40, d_model=64)
  with pytest.raises(ValueError, match=r"has shape .*64.* but .*32.*d_model"):
    init_from.graft(_state("classify", vocab=40, seed=0), str(tmp_path / "wide"), "linear", 0, vocab_size=40)
  _pretrained_run(tmp_path / "performer", vocab=40, attention="performer")
  with pytest.raises(ValueError, match="collection"):  # softmax has no random features to take them
    init_from.graft(
      _state("classify", vocab=40, seed=0, attention="softmax"),
      str(tmp_path / "performer"),
      "softmax",
      0,
      vocab_size=40,
    )
  _pretrained_run(tmp_path / "softmax", vocab=40, attention="softmax")
  with pytest.raises(ValueError, match="has no .*same model.attention"):
    init_from.graft(
      _state("classify", vocab=40, seed=0, attention="hedgehog"),
      str(tmp_path / "softmax"),
      "hedgehog",
      0,
      vocab_size=40,
    )
  with pytest.raises(ValueError, match="holds no checkpoints"):
    init_from.graft(_state("classify", vocab=40, seed=0), str(tmp_path / "missing"), "linear", 0, vocab_size=40)
  with pytest.raises(ValueError, match=r"only \{variant\} and \{seed\}"):
    init_from.resolve(str(tmp_path / "{width}"), "linear", 0)
