"""Linearizing a softmax encoder (research/linearize.py): losses, the mixer swap, both stages, the resumable driver."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from research import linearize as lz
from research.attention.hedgehog import attention_distillation_loss
from research.cli import main
from research.config import load_config
from research.data import corpora
from research.data.tokenizer import ByteTokenizer
from research.models.encoder import EncoderConfig

LENGTH = 24  # tokens per synthetic row
TEACHER_CFG = EncoderConfig(
  vocab_size=ByteTokenizer.vocab_size,
  max_len=32,
  d_model=32,
  num_heads=4,
  num_layers=2,
  mlp_dim=64,
  norm="post",
  norm_eps=1e-12,
  type_vocab_size=2,
)
INFO = {"name": "tiny", "pooling": "mean", "normalize": True}
BATCH, STEPS = 4, 8
# the driver test's optimizers: with the same batch shape the stage tests reuse its compiled steps (or it theirs)
STAGE1 = lz.OptSpec(3e-2, total_steps=STEPS, warmup_steps=1)
STAGE2 = lz.OptSpec(1e-3, total_steps=STEPS, warmup_steps=1)


@pytest.fixture(scope="module")
def teacher_params():
  """A random BERT-layout softmax encoder; q/k kernels scaled up so that its attention is far from uniform."""
  params = jax.tree.map(np.asarray, lz.init_variables(TEACHER_CFG, jax.random.key(1))["params"])
  for name in ("query", "key"):
    params["stack"]["layers"][name]["kernel"] = params["stack"]["layers"][name]["kernel"] * 3.0
  return params


def synthetic_rows(n: int, seed: int) -> lz.Rows:
  rng = np.random.default_rng(seed)
  tok = ByteTokenizer()
  return lz.Rows.from_lists(
    [
      [tok.cls_id, *rng.integers(tok.offset, tok.vocab_size, k - 2), tok.sep_id] for k in rng.integers(6, LENGTH + 1, n)
    ],
    LENGTH,
  )


def flat(tree) -> dict:
  return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}


def masked_softmax(logits, valid_BxL):
  keys = valid_BxL[:, None, None, :]
  w = jax.nn.softmax(jnp.where(keys, logits, -jnp.inf), axis=-1, where=keys)
  return jnp.where(keys & valid_BxL[:, None, :, None], w, 0.0)


# ------------------------------------------------------------------------------------------------------ losses
def test_distillation_loss_is_zero_only_at_equality():
  k1, k2 = jax.random.split(jax.random.key(0))
  valid_BxL = jnp.arange(7)[None] < jnp.array([7, 4, 5])[:, None]
  teacher = masked_softmax(2.0 * jax.random.normal(k1, (2, 3, 2, 7, 7)), valid_BxL)  # 2 layers, B3, H2, L=S=7
  student = masked_softmax(jax.random.normal(k2, (2, 3, 2, 7, 7)), valid_BxL)
  assert float(lz.distillation_loss(teacher, teacher, valid_BxL, kind="kl")) == 0.0
  np.testing.assert_array_equal(lz.per_layer_distillation_loss(teacher, teacher, valid_BxL, kind="kl"), [0.0, 0.0])
  entropy = lz.attention_entropy(teacher, valid_BxL)
  assert float(lz.distillation_loss(teacher, teacher, valid_BxL, kind="ce")) == pytest.approx(float(entropy), 1e-7)
  kl, ce = (float(lz.distillation_loss(teacher, student, valid_BxL, kind=k)) for k in ("kl", "ce"))
  assert kl > 0.05 and ce == pytest.approx(kl + float(entropy), rel=1e-6)
  # the CE form is Hedgehog's loss, layer by layer
  for layer in range(2):
    reference = attention_distillation_loss(teacher[layer], student[layer], valid_BxL)
    assert float(lz.distillation_loss(teacher[layer], student[layer], valid_BxL)) == pytest.approx(
      float(reference), rel=1e-6
    )
  # rows of padded queries do not count
  garbage = jnp.where(valid_BxL[None, :, None, :, None], student, 0.37)
  assert float(lz.distillation_loss(teacher, garbage, valid_BxL, kind="kl")) == pytest.approx(kl, rel=1e-7)


# ------------------------------------------------------------------------------------------------ mixer swap
@pytest.mark.parametrize(
  "feature_map,options", [("hedgehog", {}), ("based", {"feature_dim": 4}), ("performer", {"num_features": 8})]
)
def test_swap_mixers_keeps_every_teacher_array(teacher_params, feature_map, options):
  cfg, variables = lz.swap_mixers(TEACHER_CFG, teacher_params, feature_map, options)
  assert cfg.attention == feature_map and cfg.norm == "post"
  assert {
    f: getattr(cfg, f)
    for f in ("d_model", "num_heads", "num_layers", "mlp_dim", "type_vocab_size", "norm_eps", "vocab_size", "max_len")
  } == {
    f: getattr(TEACHER_CFG, f)
    for f in ("d_model", "num_heads", "num_layers", "mlp_dim", "type_vocab_size", "norm_eps", "vocab_size", "max_len")
  }
  teacher, student = flat(teacher_params), flat(variables["params"])
  for path, array in teacher.items():
    assert student[path].dtype == array.dtype and student[path].tobytes() == array.tobytes(), path
  added = set(student) - set(teacher)
  assert all("/mixer/" in p for p in added)
  if feature_map == "performer":
    assert not added and set(flat(variables["random_features"])) == {"stack/layers/mixer/projection/w"}
  else:
    assert added and set(variables) == {"params"}
  if feature_map == "hedgehog":  # identity-initialised maps, one per layer (stacked)
    np.testing.assert_array_equal(student["stack/layers/mixer/q_map/kernel"][1, 0], np.eye(8))


def test_bad_feature_map_or_option_is_a_clear_error(teacher_params):
  with pytest.raises(
    ValueError,
    match=r"feature map 'softmax' cannot linearize .* not a linear one; choose one of "
    r"hedgehog, based, performer",
  ):
    lz.swap_mixers(TEACHER_CFG, teacher_params, "softmax")
  with pytest.raises(ValueError, match="feature map 'hedgehgo' cannot linearize"):
    lz.swap_mixers(TEACHER_CFG, teacher_params, "hedgehgo")
  with pytest.raises(ValueError, match="unknown option.*'window' for attention 'hedgehog'"):
    lz.swap_mixers(TEACHER_CFG, teacher_params, "hedgehog", {"window": 4})


@pytest.mark.parametrize(
  "argv,message",
  [
    (["--feature-map", "linear"], "feature map 'linear' cannot linearize softmax attention"),
    (["--teacher", "bert-huge"], "unknown pretrained model 'bert-huge'"),
    (["--config", "experiments/linearize.py:stage1.steps=-1"], "stage1.steps must be >= 0, got -1"),
    (["--config", "experiments/linearize.py:attention_cfg.feature_dimm=8"], "unknown option(s) 'feature_dimm'"),
  ],
)
def test_cli_bad_input_is_one_error_line(argv, message, tmp_path, capsys):
  args = ["linearize", "--no-progress", "--workdir", str(tmp_path / "w")]
  rc = main(args + (argv if "--config" in argv else ["--config", "experiments/linearize.py", *argv]))
  err = capsys.readouterr().err
  assert rc == 2 and message in err and err.count("\n") == 1
  assert not (tmp_path / "w").exists()  # failed before anything was loaded or written


# ------------------------------------------------------------------------------------------------------ stages
def test_stage1_lowers_the_distillation_loss_and_trains_only_the_mixers(teacher_params):
  cfg, variables = lz.swap_mixers(TEACHER_CFG, teacher_params, "hedgehog")
  rows = synthetic_rows(BATCH, seed=0)
  out, history = lz.attention_distill(
    cfg, variables, TEACHER_CFG, teacher_params, [(rows.tokens, rows.lengths)] * 8, STAGE1
  )
  first, last = history[0], history[-1]
  assert last["kl"] < 0.9 * first["kl"] and last["loss"] < first["loss"]
  assert {f"kl_layer{i}" for i in range(2)} <= set(first)
  before, after = flat(variables["params"]), flat(out["params"])
  assert [p for p in before if before[p].tobytes() != after[p].tobytes()] == [p for p in before if "/mixer/" in p]
  with pytest.raises(ValueError, match="performer has no trainable feature map"):
    lz.attention_distill(
      *lz.swap_mixers(TEACHER_CFG, teacher_params, "performer", {"num_features": 8}),
      TEACHER_CFG,
      teacher_params,
      [],
      lz.OptSpec(1e-2, total_steps=1),
    )


def test_stage2_lowers_the_output_loss(teacher_params):
  cfg, variables = lz.swap_mixers(TEACHER_CFG, teacher_params, "hedgehog")
  rows = synthetic_rows(BATCH, seed=1)
  _, history = lz.output_distill(cfg, variables, TEACHER_CFG, teacher_params, [(rows.tokens, rows.lengths)] * 8, STAGE2)
  assert history[-1]["loss"] < 0.7 * history[0]["loss"]
  assert history[-1]["mse"] < history[0]["mse"] and history[-1]["cosine"] > history[0]["cosine"]


# ------------------------------------------------------------------------------------------------------ driver
def config(extra: str = ""):
  c = load_config(
    f"experiments/linearize.py:stage1.steps={STEPS},stage2.steps={STEPS},train.eval_every=5,"
    f"train.log_every=1,train.batch_size={BATCH},train.eval_batch_size=8,data.max_tokens={LENGTH},"
    f"stage1.learning_rate={STAGE1.learning_rate},stage2.learning_rate={STAGE2.learning_rate},"
    f"stage1.warmup_steps=1,stage2.warmup_steps=1{',' + extra if extra else ''}"
  )
  assert lz._specs(c, STEPS) == (STAGE1, STAGE2)
  return c


def test_driver_resumes_exactly_and_saves_a_loadable_student(teacher_params, tmp_path):
  data = lz.Batches(synthetic_rows(40, seed=2), synthetic_rows(10, seed=3))
  run = lambda c, w: lz.linearize(
    c, w, progress=False, teacher=(TEACHER_CFG, teacher_params, ByteTokenizer(), INFO), data=data
  )  # noqa: E731
  whole = run(config(), tmp_path / "whole")
  assert whole["finished"] and whole["step"] == 2 * STEPS
  assert whole["held_out_after_stage1"]["attn_kl"] < whole["held_out_initial"]["attn_kl"]
  for stop in (3, 11):  # killed inside stage 1, then inside stage 2
    part = run(config(f"train.stop_after={stop}"), tmp_path / "split")
    assert part["step"] == stop and not part["finished"]
  resumed = run(config(), tmp_path / "split")
  assert resumed["resumed_from"] == 11 and resumed["finished"]
  with pytest.raises(ValueError, match="holds a run with .*'stage1_steps': 8.* resume with the same feature_map"):
    run(config("stage1.steps=5"), tmp_path / "split")

  a, b = (lz.load_student(tmp_path / w) for w in ("whole", "split"))
  for path, value in flat(a.variables["params"]).items():
    np.testing.assert_allclose(flat(b.variables["params"])[path], value, rtol=1e-6, atol=1e-7, err_msg=path)
  rows = lambda w: [json.loads(line) for line in (tmp_path / w / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
  assert [(r["step"], r["split"]) for r in rows("split")] == [(r["step"], r["split"]) for r in rows("whole")]
  stage1 = [r for r in rows("whole") if r["split"] == "train" and r["stage"] == 1]
  assert [r["step"] for r in stage1] == list(range(1, STEPS + 1)) and all("kl_layer1" in r for r in stage1)
  held = [r["step"] for r in rows("whole") if r["split"] == "held_out"]
  assert held == [0, 5, 8, 10, 15, 16]  # start, every 5 steps, end of stage 1, end of stage 2
  assert a.normalize and a.add_sep and a.embed(["a linear student"]).shape == (1, TEACHER_CFG.d_model)

  from research.embed import Embedder

  direct = Embedder.from_checkpoint(tmp_path / "whole", add_sep=True, normalize=True)  # byte tokenizer: works too
  np.testing.assert_allclose(direct.embed(["a linear student"]), a.embed(["a linear student"]), atol=1e-6)


def test_performer_skips_stage1(teacher_params, tmp_path, capsys):
  data = lz.Batches(synthetic_rows(8, seed=4), synthetic_rows(4, seed=5))
  c = config("feature_map=performer,attention_cfg.num_features=8")
  c.stage2.steps = 0  # nothing trains: the swapped student (with its random features) is saved as it is
  summary = lz.linearize(
    c, tmp_path, progress=False, teacher=(TEACHER_CFG, teacher_params, ByteTokenizer(), INFO), data=data
  )
  assert "stage 1 skipped: performer has no trainable feature map" in capsys.readouterr().out
  assert summary["stage1_skipped"] and summary["stage1_steps"] == 0 and summary["step"] == 0
  student = lz.load_student(tmp_path)
  assert set(student.variables) == {"params", "random_features"}


# -------------------------------------------------------------------------------------------------------- data
def test_batches_are_a_deterministic_function_of_the_step():
  data = lz.Batches(synthetic_rows(10, seed=6), synthetic_rows(2, seed=7))
  epoch = np.concatenate([data.batch(s, 5, seed=0)[1] for s in (0, 1)])
  assert sorted(epoch) == sorted(data.train.lengths)  # one epoch visits every row once
  np.testing.assert_array_equal(data.batch(3, 4, seed=0)[0], data.batch(3, 4, seed=0)[0])
  assert not np.array_equal(data.batch(0, 10, seed=0)[0], data.batch(0, 10, seed=1)[0])


def test_chunking_packs_lines_into_rows():
  tok = ByteTokenizer()
  chunks = lz.chunk_document(tok, "=====\nabc def\nghij\n" + "x" * 25, capacity=10)
  assert [tok.decode(c) for c in chunks] == ["abc def", "ghij", "x" * 10, "x" * 10, "x" * 5]  # no letter: dropped
  assert lz.chunk_document(tok, "ab\ncd\n", capacity=10) == [tok.encode("ab") + tok.encode("cd")]


@pytest.mark.skipif(not corpora.installed("wordnet"), reason="corpus wordnet is not installed")
def test_corpus_rows_are_wrapped_deterministic_and_split():
  tok = ByteTokenizer()
  kwargs = dict(max_documents=30, max_rows=40, held_out_percent=20, held_out_rows=5, seed=0)
  data = lz.corpus_batches(tok, ("wordnet",), 48, **kwargs)
  info = data.info["wordnet"]
  assert info["train_documents"] <= 30 and info["train_rows"] == len(data.train.lengths) == 40
  assert info["held_out_rows"] == len(data.held_out.lengths) == 5
  for rows in (data.train, data.held_out):
    assert (rows.tokens[:, 0] == tok.cls_id).all() and rows.tokens.shape[1] == 48 and (rows.lengths <= 48).all()
    assert (rows.tokens[np.arange(len(rows.lengths)), rows.lengths - 1] == tok.sep_id).all()
  again = lz.corpus_batches(tok, ("wordnet",), 48, **kwargs)
  np.testing.assert_array_equal(again.train.tokens, data.train.tokens)
  train_texts = {tok.decode(r[1 : n - 1]) for r, n in zip(data.train.tokens, data.train.lengths, strict=True)}
  assert not train_texts & {
    tok.decode(r[1 : n - 1]) for r, n in zip(data.held_out.tokens, data.held_out.lengths, strict=True)
  }
