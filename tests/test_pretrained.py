"""Imported BERT weights compute BertModel exactly: a numpy BERT on random weights, the real all-MiniLM-L6-v2
against PyTorch reference vectors (tests/fixtures/minilm_reference.*, scripts/minilm_reference.py), bad files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from research import pretrained
from research.embed import Embedder

FIXTURE = Path(__file__).parent / "fixtures"
TINY_BERT = {
  "model_type": "bert",
  "hidden_act": "gelu",
  "position_embedding_type": "absolute",
  "vocab_size": 50,
  "max_position_embeddings": 16,
  "hidden_size": 8,
  "num_attention_heads": 2,
  "num_hidden_layers": 2,
  "intermediate_size": 12,
  "layer_norm_eps": 1e-12,
  "type_vocab_size": 2,
}


def _random_bert(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  e, m = cfg["hidden_size"], cfg["intermediate_size"]
  shapes = {
    "embeddings.word_embeddings.weight": (cfg["vocab_size"], e),
    "embeddings.position_embeddings.weight": (cfg["max_position_embeddings"], e),
    "embeddings.token_type_embeddings.weight": (2, e),
    "embeddings.LayerNorm.weight": (e,),
    "embeddings.LayerNorm.bias": (e,),
    "pooler.dense.weight": (e, e),
    "pooler.dense.bias": (e,),
  }
  for i in range(cfg["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    for n in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
      shapes.update({p + n + ".weight": (e, e), p + n + ".bias": (e,)})
    shapes.update(
      {
        p + "intermediate.dense.weight": (m, e),
        p + "intermediate.dense.bias": (m,),
        p + "output.dense.weight": (e, m),
        p + "output.dense.bias": (e,),
      }
    )
    for n in ("attention.output.LayerNorm", "output.LayerNorm"):
      shapes.update({p + n + ".weight": (e,), p + n + ".bias": (e,)})
  return {
    k: rng.normal(0, 0.5, s).astype(np.float32) + (1.0 if k.endswith("LayerNorm.weight") else 0.0)
    for k, s in shapes.items()
  }


def _numpy_bert(t: dict[str, np.ndarray], cfg: dict, ids: np.ndarray) -> list[np.ndarray]:
  """Hugging Face BertModel's forward pass for one unpadded sequence, in float64: [embeddings, layer 1..N]."""
  t = {k: v.astype(np.float64) for k, v in t.items()}
  eps, h = cfg["layer_norm_eps"], cfg["num_attention_heads"]
  ln = lambda x, n: (
    (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * t[n + ".weight"] + t[n + ".bias"]
  )  # noqa: E731
  lin = lambda x, n: x @ t[n + ".weight"].T + t[n + ".bias"]  # noqa: E731
  gelu = np.vectorize(lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2))))
  x = (
    t["embeddings.word_embeddings.weight"][ids]
    + t["embeddings.position_embeddings.weight"][: len(ids)]
    + t["embeddings.token_type_embeddings.weight"][0]
  )
  x = ln(x, "embeddings.LayerNorm")
  out = [x]
  for i in range(cfg["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    split = lambda a: a.reshape(len(ids), h, -1).transpose(1, 0, 2)  # noqa: E731
    q, k, v = (split(lin(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
    s = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
    a = np.exp(s - s.max(-1, keepdims=True))
    ctx = (a / a.sum(-1, keepdims=True) @ v).transpose(1, 0, 2).reshape(len(ids), -1)
    x = ln(x + lin(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
    x = ln(x + lin(gelu(lin(x, p + "intermediate.dense")), p + "output.dense"), p + "output.LayerNorm")
    out.append(x)
  return out


class _Ids:
  """A tokenizer stand-in: the text is a space-separated list of ids."""

  cls_id, sep_id = 1, 2

  def encode_with_spans(self, text):
    ids = [int(w) for w in text.split()]
    return ids, [(0, 1)] * len(ids)


def test_converted_random_bert_equals_a_numpy_bert():
  cfg = pretrained.bert_config(TINY_BERT)
  assert (cfg.norm, cfg.norm_eps, cfg.type_vocab_size, cfg.gelu_approximate) == ("post", 1e-12, 2, False)
  tensors = _random_bert(TINY_BERT)
  params = pretrained.convert_bert({"bert." + k: v for k, v in tensors.items()}, cfg)  # prefix tolerated
  emb = Embedder(cfg, {"params": params}, _Ids(), max_tokens=16, add_cls=True, add_sep=True)
  text = "5 17 33 49 8 3"
  got = emb.embed([text], pooling="none", layer=[0, 1, 2])[0]
  assert list(got.ids) == [1, 5, 17, 33, 49, 8, 3, 2]
  want = _numpy_bert(tensors, TINY_BERT, got.ids)
  for layer in range(3):
    np.testing.assert_allclose(got.vectors[layer], want[layer], atol=2e-5, err_msg=f"layer {layer}")


@pytest.mark.parametrize(
  "change, match",
  [
    ({"hidden_act": "relu"}, "hidden_act='relu'; only 'gelu'"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"hidden_size": None}, "lacks 'hidden_size'"),
  ],
)
def test_unsupported_configs_are_named(change, match):
  cfg = {k: v for k, v in {**TINY_BERT, **change}.items() if v is not None}
  with pytest.raises(ValueError, match=match):
    pretrained.bert_config(cfg)


def test_mismatched_or_missing_tensors_are_named():
  cfg = pretrained.bert_config(TINY_BERT)
  tensors = _random_bert(TINY_BERT)
  with pytest.raises(ValueError, match="lacks tensor 'encoder.layer.1.output.dense.weight'"):
    pretrained.convert_bert({k: v for k, v in tensors.items() if k != "encoder.layer.1.output.dense.weight"}, cfg)
  wide = pretrained.bert_config({**TINY_BERT, "intermediate_size": 16})
  with pytest.raises(ValueError, match="do not fit the config"):
    pretrained.convert_bert(tensors, wide)
  with pytest.raises(ValueError, match="not a BERT checkpoint"):
    pretrained.convert_bert({"weight": np.zeros(3)}, cfg)


def test_unknown_model_and_corrupt_files(tmp_path):
  with pytest.raises(ValueError, match="unknown pretrained model 'bert-huge'; available: minilm"):
    Embedder.from_pretrained("bert-huge")
  bad = tmp_path / "model.safetensors"
  bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
  with pytest.raises(ValueError, match="is not a readable safetensors file"):
    pretrained.read_safetensors(bad)
  with pytest.raises(ValueError, match="does not exist"):
    pretrained.read_safetensors(tmp_path / "missing.safetensors")
  (tmp_path / "tokenizer.json").write_text("{}")
  with pytest.raises(ValueError, match="is not a readable tokenizer.json"):
    pretrained.WordPieceTokenizer(tmp_path / "tokenizer.json")


@pytest.fixture(scope="module")
def minilm():
  return Embedder.from_pretrained("minilm")


@pytest.fixture(scope="module")
def reference():
  ref = np.load(FIXTURE / "minilm_reference.npz")
  meta = json.loads((FIXTURE / "minilm_reference.json").read_text())
  return ref, meta


def test_minilm_matches_pytorch(minilm, reference):
  """Pooled (mean + L2) and per-token vectors of all-MiniLM-L6-v2 vs sentence-transformers/transformers."""
  ref, meta = reference
  keep = [i for i, s in enumerate(meta["sentences"]) if s]  # "" is [CLS] [SEP] there, an error here (below)
  sentences = [meta["sentences"][i] for i in keep]
  assert len(sentences) >= 20
  out = minilm.embed(sentences, pooling="none", overflow="truncate")
  offsets = ref["token_offsets"]
  worst = 0.0
  for i, o in zip(keep, out, strict=True):
    rows = slice(offsets[i], offsets[i + 1])
    np.testing.assert_array_equal(o.ids, ref["input_ids"][rows], err_msg=f"ids of sentence {i}")
    np.testing.assert_array_equal(o.spans, ref["char_spans"][rows], err_msg=f"spans of sentence {i}")
    worst = max(worst, float(np.abs(o.vectors - ref["last_hidden"][rows]).max()))
  assert worst <= 1e-4, worst
  pooled = minilm.embed(sentences, overflow="truncate")
  assert pooled.shape == (len(sentences), 384) and pooled.dtype == np.float32
  assert float(np.abs(pooled - ref["pooled"][keep]).max()) <= 1e-4
  assert meta["truncated"] and all(len(o.ids) <= 256 for o in out)
  with pytest.raises(ValueError, match=r"at most 254 \(\+ specials, 256 tokens\)"):
    minilm.embed(sentences)  # the fixture has a text longer than max_seq_length
  with pytest.raises(ValueError, match="tokenizes to nothing"):
    minilm.embed(["fine", ""])


def test_minilm_layers_match_pytorch(minilm, reference):
  ref, meta = reference
  starts = ref["hidden_offsets"]
  n = len(starts) - 1
  layers = minilm.embed(meta["sentences"][:n], pooling="none", layer=list(range(7)))
  for i, o in enumerate(layers):
    want = ref["hidden_layers"][:, starts[i] : starts[i + 1]]
    assert float(np.abs(o.vectors - want).max()) <= 1e-4, i
