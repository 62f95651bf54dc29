"""research.embed: per-token and pooled vectors equal the encoder's own outputs; layers, batching, windows,
checkpoints of real runs, and bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.attention.masks import Segments
from research.cli import main
from research.data.tokenizer import ByteTokenizer
from research.embed import Embedder
from research.models.encoder import Encoder, EncoderConfig

TEXTS = ["the bank approved my loan", "river bank", "Café crème à Noël", "x", "a somewhat longer sentence here"]


def _embedder(norm: str = "pre", max_tokens: int = 64, **kw) -> Embedder:
  cfg = EncoderConfig(
    vocab_size=ByteTokenizer.vocab_size, max_len=64, d_model=32, num_heads=4, num_layers=3, mlp_dim=64, norm=norm, **kw
  )
  tokens = jnp.zeros((1, 8), jnp.int32)
  variables = Encoder(cfg).init(jax.random.key(0), tokens, Segments.from_lengths(jnp.array([8]), 8))
  return Embedder(cfg, variables, ByteTokenizer(), max_tokens=max_tokens, add_cls=True, add_sep=False)


def _direct(emb: Embedder, ids: np.ndarray, cfg: EncoderConfig | None = None, variables=None) -> np.ndarray:
  cfg, variables = cfg or emb.cfg, variables or emb.variables
  segments = Segments.from_lengths(jnp.array([len(ids)]), len(ids))
  return np.asarray(Encoder(cfg).apply(variables, jnp.asarray(ids)[None], segments))[0]


def test_token_vectors_equal_the_encoder_output_and_spans_point_into_the_text():
  emb = _embedder()
  out = emb.embed(TEXTS, pooling="none", batch_size=2)
  assert [o.text for o in out] == TEXTS
  for o in out:
    assert o.ids[0] == ByteTokenizer.cls_id and o.vectors.shape == (len(o.ids), 32) and o.vectors.dtype == np.float32
    np.testing.assert_allclose(o.vectors, _direct(emb, o.ids), atol=1e-5)
    for start, end in o.spans[1:]:
      assert 0 <= start < end <= len(o.text)
  chars = dict.fromkeys(tuple(span) for span in out[2].spans[1:])  # bytes of one character share its span
  assert "".join(out[2].text[a:b] for a, b in chars) == out[2].text
  assert out[2].text[slice(*out[2].spans[4])] == "é" and tuple(out[2].spans[4]) == tuple(out[2].spans[5])


def test_pooled_vectors_batching_and_normalisation():
  emb = _embedder()
  tokens = emb.embed(TEXTS, pooling="none")
  mean = emb.embed(TEXTS, pooling="mean")
  cls = emb.embed(TEXTS, pooling="cls")
  np.testing.assert_allclose(mean, np.stack([t.vectors.mean(0) for t in tokens]), atol=1e-6)
  np.testing.assert_allclose(cls, np.stack([t.vectors[0] for t in tokens]), atol=1e-6)
  one_by_one = np.concatenate([emb.embed([t]) for t in TEXTS])  # padding and sort order change nothing
  np.testing.assert_allclose(mean, one_by_one, atol=1e-5)
  unit = emb.embed(TEXTS, normalize=True)
  np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
  np.testing.assert_allclose(unit, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6)


def test_layers_are_the_outputs_of_the_first_k_blocks():
  """Post-LN (no final norm): layer k of the full encoder == the output of an encoder cut to its first k blocks."""
  emb = _embedder(norm="post", type_vocab_size=2)
  text = ["layered representations"]
  ids = emb.embed(text, pooling="none")[0].ids
  stacked = emb.embed(text, pooling="none", layer=[0, 1, 2, 3])[0].vectors
  assert stacked.shape == (4, len(ids), 32)
  np.testing.assert_allclose(stacked[3], _direct(emb, ids), atol=1e-5)
  np.testing.assert_allclose(emb.embed(text, layer=-1), emb.embed(text, layer=3), atol=0)
  params = emb.variables["params"]
  for k in (1, 2):
    cut = dataclasses.replace(emb.cfg, num_layers=k)
    sliced = {**params, "stack": jax.tree.map(lambda a, k=k: a[:k], params["stack"])}
    np.testing.assert_allclose(stacked[k], _direct(emb, ids, cut, {"params": sliced}), atol=1e-5, err_msg=f"{k}")
  # layer 0: embeddings (+ positions + token type 0) through the embedding LayerNorm
  p = jax.tree.map(np.asarray, params)
  x = p["embed"]["embedding"][ids] + p["pos_embedding"][: len(ids)] + p["type_embedding"][0]
  x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(stacked[0], x * p["embed_norm"]["scale"] + p["embed_norm"]["bias"], atol=1e-5)


def test_long_texts_error_truncate_or_window():
  emb = _embedder(max_tokens=16)  # 15 content bytes + [CLS]
  long_text = "abcdefghijklmnopqrstuvwxyz0123456789"
  with pytest.raises(ValueError, match=r"has 36 pieces .* at most 15 .*overflow='truncate'"):
    emb.embed([long_text])
  cut = emb.embed([long_text], pooling="none", overflow="truncate")[0]
  assert len(cut.ids) == 16 and cut.text[slice(*cut.spans[-1])] == "o"
  win = emb.embed([long_text, "short"], pooling="none", overflow="window")
  full = win[0]
  assert len(full.ids) == 37 and full.vectors.shape == (37, 32)
  assert [full.text[a:b] for a, b in full.spans[1:]] == list(long_text)
  np.testing.assert_allclose(full.vectors[:5], cut.vectors[:5], atol=1e-5)  # the first window's own tokens
  starts = emb._windows(36)
  assert starts == [0, 7, 14, 21] and starts[-1] + 15 == 36
  last = emb.embed([long_text[21:]], pooling="none")[0]  # the last window alone: its right half is assembled
  np.testing.assert_allclose(full.vectors[-4:], last.vectors[-4:], atol=1e-5)
  np.testing.assert_allclose(win[1].vectors, emb.embed(["short"], pooling="none")[0].vectors, atol=1e-5)


@pytest.mark.parametrize(
  "call, match",
  [
    (lambda e: e.embed("just a string"), "sequence of texts"),
    (lambda e: e.embed([]), "no texts"),
    (lambda e: e.embed(["ok", ""]), "tokenizes to nothing"),
    (lambda e: e.embed(["ok", 3]), "must be strings"),
    (lambda e: e.embed(["ok"], pooling="max"), "pooling='max'"),
    (lambda e: e.embed(["ok"], overflow="drop"), "overflow='drop'"),
    (lambda e: e.embed(["ok"], layer=4), r"layer=4; expected an integer in \[0, 3\]"),
    (lambda e: e.embed(["ok"], layer=[]), "empty sequence"),
    (lambda e: e.embed(["ok"], batch_size=0), "batch_size"),
  ],
)
def test_bad_input_is_one_clear_error(call, match):
  with pytest.raises(ValueError, match=match):
    call(_embedder())


TINY_WIC = (
  "model.d_model=32,model.num_heads=4,model.mlp_dim=64,train.num_steps=2,train.eval_every=2,"
  "train.batch_size=8,train.eval_batch_size=32,data.vocab_size=400"
)


@pytest.fixture(scope="module")
def wic_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("runs") / "wic"
  assert main(["train", "--config", f"experiments/wic.py:{TINY_WIC}", "--workdir", str(workdir), "--no-progress"]) == 0
  return workdir


def _classifier_encoder(workdir):
  """The run's encoder, rebuilt independently: its provenance config and the raw checkpoint."""
  from research.config import load_config
  from research.data.tasks import build
  from research.train import init_from
  from research.train.loop import encoder_config

  config = load_config(f"experiments/wic.py:{TINY_WIC}")
  task = build("wic", config.data.to_dict())
  state, _, _ = init_from.load(workdir)
  return encoder_config(config, task.seq_len, task.vocab_size), {"params": state["params"]["encoder"]}, task


def test_from_checkpoint_of_a_real_run(wic_run, tmp_path, capsys):
  emb = Embedder.from_checkpoint(wic_run)
  cfg, variables, task = _classifier_encoder(wic_run)
  assert emb.cfg == cfg and emb.add_cls and not emb.add_sep
  sentences = ["he sat on the bank of the river", "she went to the bank to deposit money"]
  out = emb.embed(sentences, pooling="none")
  for o, s in zip(out, sentences, strict=True):
    assert list(o.ids) == [2, *task.tokenizer.encode(s)]
    np.testing.assert_allclose(o.vectors, _direct(emb, o.ids, cfg, variables), atol=1e-5)
  # the same run without its encoder card: rebuilt from provenance.json (slower), same vectors
  bare = tmp_path / "bare"
  shutil.copytree(wic_run, bare)
  (bare / "encoder.json").unlink()
  (bare / "tokenizer.model").unlink()
  np.testing.assert_allclose(Embedder.from_checkpoint(bare).embed(sentences), emb.embed(sentences), atol=1e-6)
  # the CLI writes the pooled vectors
  (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n")
  assert (
    main(["embed", "--checkpoint", str(wic_run), "--input", str(tmp_path / "in.txt"), "--out", str(tmp_path / "v.npy")])
    == 0
  )
  np.testing.assert_allclose(np.load(tmp_path / "v.npy"), emb.embed(sentences), atol=1e-6)
  assert (
    main(
      [
        "embed",
        "--checkpoint",
        str(wic_run),
        "--input",
        str(tmp_path / "in.txt"),
        "--pooling",
        "none",
        "--out",
        str(tmp_path / "t.npz"),
      ]
    )
    == 0
  )
  z = np.load(tmp_path / "t.npz")
  assert list(z["offsets"]) == [0, len(out[0].ids), len(out[0].ids) + len(out[1].ids)]
  np.testing.assert_allclose(z["vectors"][: len(out[0].ids)], out[0].vectors, atol=1e-6)


def test_checkpoint_errors(wic_run, tmp_path, capsys):
  broken = tmp_path / "broken"
  shutil.copytree(wic_run, broken)
  card = json.loads((broken / "encoder.json").read_text())
  card["encoder"]["d_model"] = 64
  (broken / "encoder.json").write_text(json.dumps(card))
  with pytest.raises(ValueError, match=r"does not match its encoder config .* checkpoint \(.*32.*\) vs config"):
    Embedder.from_checkpoint(broken)
  with pytest.raises(ValueError, match="holds no checkpoints"):
    Embedder.from_checkpoint(tmp_path)
  (tmp_path / "in.txt").write_text("fine\n\n")
  assert (
    main(["embed", "--checkpoint", str(wic_run), "--input", str(tmp_path / "in.txt"), "--out", str(tmp_path / "v.npy")])
    == 2
  )
  assert "line(s) [2] are empty" in capsys.readouterr().err
  assert (
    main(
      ["embed", "--checkpoint", str(wic_run), "--input", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "v.npy")]
    )
    == 2
  )
  assert "is not a file" in capsys.readouterr().err
  (tmp_path / "ok.txt").write_text("fine\n")
  assert (
    main(
      [
        "embed",
        "--checkpoint",
        str(wic_run),
        "--input",
        str(tmp_path / "ok.txt"),
        "--pooling",
        "none",
        "--out",
        str(tmp_path / "v.npy"),
      ]
    )
    == 2
  )
  assert "expected a .npz path" in capsys.readouterr().err
