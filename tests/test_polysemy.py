"""research.eval.polysemy: target spans, the threshold search, WiC per layer, the logistic probe, retrieval, the
report files and the CLI's bad input. A tiny random byte-level encoder; task data monkeypatched to small inputs."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.attention.masks import Segments
from research.cli import main
from research.data.tasks import sentiment, wic, xling
from research.data.tokenizer import ByteTokenizer
from research.embed import Embedder
from research.eval import polysemy
from research.models.encoder import Encoder, EncoderConfig


@pytest.fixture(scope="module")
def emb() -> Embedder:
  cfg = EncoderConfig(
    vocab_size=ByteTokenizer.vocab_size, max_len=64, d_model=32, num_heads=4, num_layers=2, mlp_dim=64, norm="pre"
  )
  tokens = jnp.zeros((1, 8), jnp.int32)
  variables = Encoder(cfg).init(jax.random.key(0), tokens, Segments.from_lengths(jnp.array([8]), 8))
  return Embedder(cfg, variables, ByteTokenizer(), max_tokens=64, add_cls=True, add_sep=False, name="tiny")


# ------------------------------------------------------------------------------------------- target spans
@pytest.mark.parametrize(
  "sentence, lemma, pos, expected",
  [
    ("he ran to the bank", "bank", "n", "bank"),
    ("Two Banks merged.", "bank", "n", "Banks"),
    ("the ponies grazed", "pony", "n", "ponies"),
    ("she was running late", "run", "v", "running"),
    ("he hoped for rain and hoping helps", "hope", "v", "hoped"),  # the first occurrence
    ("they carried it", "carry", "v", "carried"),
    ("a bigger dog", "big", "a", "bigger"),
    ("the happiest day", "happy", "a", "happiest"),
    ("she looked up the word", "look up", "v", "looked up"),  # verbs inflect their first word
    ("the Supreme Courts", "supreme court", "n", "Supreme Courts"),  # nouns their last
    ("it is well-known", "well known", "a", "well-known"),
    ("they gave up hope; he gives up", "give up", "v", "gives up"),  # irregular "gave" is skipped
  ],
)
def test_target_spans_on_inflected_forms(sentence, lemma, pos, expected):
  start, end = polysemy.target_spans(sentence, lemma, pos)
  assert sentence[start:end] == expected
  assert wic.contains(lemma, pos, wic.words(sentence))


def test_target_spans_errors_and_unicode_offsets():
  with pytest.raises(ValueError, match=r"lemma 'mouse' \(pos 'n'\) does not occur in 'two mice'.*'mouse'"):
    polysemy.target_spans("two mice", "mouse", "n")  # irregular plural: wic does not match it either
  with pytest.raises(ValueError, match="does not occur"):
    polysemy.target_spans("the banker", "bank", "n")  # a longer word is not an inflection
  with pytest.raises(ValueError, match="does not occur"):
    polysemy.target_spans("she looked it up", "look up", "v")  # the lemma's words must be consecutive
  with pytest.raises(ValueError, match="no \\[a-z0-9\\] word"):
    polysemy.target_spans("anything", "--", "n")
  text = "İstanbul banks"  # "İ".lower() is two characters: spans still index the original text
  start, end = polysemy.target_spans(text, "bank", "n")
  assert text[start:end] == "banks"


# -------------------------------------------------------------------------------------------- threshold
def _brute_force(s: np.ndarray, y: np.ndarray) -> float:
  candidates = np.concatenate([s, [np.inf]])
  return max(float(((s >= t) == (y == 1)).mean()) for t in candidates)


@pytest.mark.parametrize("seed", range(6))
def test_threshold_search_matches_brute_force(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(1, 60))
  y = rng.integers(0, 2, n)
  s = rng.normal(size=n) + 0.8 * y
  if seed % 2:  # many ties
    s = np.round(s, 0)
  threshold, acc = polysemy.best_threshold(s, y)
  assert acc == pytest.approx(_brute_force(s, y))
  assert float(((s >= threshold) == (y == 1)).mean()) == pytest.approx(acc)
  assert threshold in s or threshold > s.max()


def test_threshold_edge_cases():
  assert polysemy.best_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == (0.8, 1.0)
  t, acc = polysemy.best_threshold(np.array([0.9, 0.1]), np.array([0, 1]))  # inverted: everything 0 or 1
  assert acc == 0.5 and t == 0.1  # the lowest of the best thresholds
  t, acc = polysemy.best_threshold(np.array([0.5, 0.5, 0.5]), np.array([0, 0, 1]))
  assert acc == pytest.approx(2 / 3) and t > 0.5  # all tied: predicting 0 for all is best
  with pytest.raises(ValueError, match="equal non-empty"):
    polysemy.best_threshold(np.array([0.1]), np.array([0, 1]))


# ----------------------------------------------------------------------------------------------- WiC
def _fake_pairs(n: int) -> dict[str, tuple[wic.Pair, ...]]:
  rng = np.random.default_rng(0)
  words = [
    ("bank", "n", ["the river bank", "two banks merged", "a bank loan", "banks of fog"]),
    ("run", "v", ["she runs fast", "running a shop", "he ran? no, he runs", "the show runs long"]),
    ("light", "a", ["a lighter bag", "light blue", "the lightest touch", "light as air"]),
  ]
  out = {}
  for split in ("train", "val", "test"):
    pairs = []
    for i in range(n):
      lemma, pos, sents = words[i % len(words)]
      a, b = rng.choice(len(sents), 2, replace=False)
      pairs.append(wic.Pair(lemma, pos, sents[a], sents[b], "x", "x" if i % 2 else "y", int(i % 2)))
    out[split] = tuple(pairs)
  return out


def test_wic_frozen_small_subset_per_layer_and_deterministic(emb, monkeypatch):
  monkeypatch.setattr(wic, "pairs", lambda cfg: _fake_pairs(12))
  result = polysemy.wic_frozen(emb, wic.Config(), [0, 1, -1], max_pairs=8)
  assert [r["layer"] for r in result["layers"]] == [0, 1, 2]
  assert result["counts"]["val"]["pairs"] == result["counts"]["test"]["pairs"] == 8
  assert result["baseline"] == 0.5
  for r in result["layers"]:
    assert 0.0 <= r["val_accuracy"] <= 1.0 and 0.0 <= r["test_accuracy"] <= 1.0
    assert r["val_accuracy"] >= 0.5  # a threshold below everything already gets the balanced half
  again = polysemy.wic_frozen(emb, wic.Config(), [0, 1, 2], max_pairs=8)
  assert again["layers"] == result["layers"]


def _same_sentence_pairs(n: int) -> dict[str, tuple[wic.Pair, ...]]:
  """Label 1 iff both sentences are the same text: learnable from [u, v, |u-v|, u*v] of the target word."""
  sents = ["the river bank", "two banks merged", "a bank loan", "banks of fog", "the bank is closed"]
  out = {}
  for k, split in enumerate(("train", "val", "test")):
    rng = np.random.default_rng(k)
    pairs = []
    for i in range(n):
      a = int(rng.integers(len(sents)))
      b = a if i % 2 else (a + 1 + int(rng.integers(len(sents) - 1))) % len(sents)
      pairs.append(wic.Pair("bank", "n", sents[a], sents[b], "x", "x", int(a == b)))
    out[split] = tuple(pairs)
  return out


def test_wic_finetune_learns_a_learnable_rule_and_leaves_the_embedder_alone(emb, monkeypatch):
  monkeypatch.setattr(wic, "pairs", lambda cfg: _same_sentence_pairs(64))
  before = jax.tree.map(np.asarray, emb.variables)
  result = polysemy.wic_finetune(emb, wic.Config(), steps=60, batch_size=16, learning_rate=3e-3, eval_every=20)
  assert [h["step"] for h in result["history"]] == [20, 40, 60]
  assert result["val_accuracy"] >= 0.9 and result["test_accuracy_best_val"] >= 0.9, result
  assert result["history"][-1]["loss"] < result["history"][0]["loss"]
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, emb.variables), before)
  with pytest.raises(ValueError, match="finetune steps=0"):
    polysemy.wic_finetune(emb, wic.Config(), steps=0)


def test_wic_similarities_use_the_target_tokens(emb):
  """Byte tokens: the target vector is the mean over exactly the target word's bytes."""
  pair = wic.Pair("bank", "n", "the bank", "banks here", "x", "x", 1)
  sims = polysemy.wic_similarities(emb, [pair], [1])
  toks = emb.embed(["the bank", "banks here"], pooling="none", layer=1)
  a, b = toks[0].vectors[1 + 4 : 1 + 8].mean(0), toks[1].vectors[1 : 1 + 5].mean(0)
  expected = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
  np.testing.assert_allclose(sims, [[expected]], rtol=1e-5)


# -------------------------------------------------------------------------------------------- logistic
def test_logistic_separates_a_linearly_separable_set():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(400, 5))
  w_true = np.array([2.0, -1.0, 0.5, 0.0, 1.0])
  y = (x @ w_true + 0.3 > 0).astype(int)
  split = {"train": slice(0, 200), "val": slice(200, 300), "test": slice(300, 400)}
  probe = polysemy.logistic_probe({k: x[v] for k, v in split.items()}, {k: y[v] for k, v in split.items()})
  assert probe["train_accuracy"] > 0.95 and probe["test_accuracy"] > 0.95
  assert probe["l2"] in polysemy.L2_GRID
  w, b = polysemy.fit_logistic(x[:200], y[:200], 1e-3)
  cos = w @ w_true / np.linalg.norm(w) / np.linalg.norm(w_true)
  assert cos > 0.95


def test_logistic_closed_forms_and_stationarity():
  rng = np.random.default_rng(1)
  y = (rng.random(50) < 0.3).astype(int)
  # no information in x: w = 0 and the bias is the log-odds of the label frequency
  w, b = polysemy.fit_logistic(np.zeros((50, 3)), y, 0.1)
  np.testing.assert_allclose(w, 0.0, atol=1e-12)
  assert b == pytest.approx(np.log(y.mean() / (1 - y.mean())), abs=1e-8)
  # two mirrored points: b = 0 by symmetry and w solves sigmoid(-w) = l2 * w
  w, b = polysemy.fit_logistic(np.array([[1.0], [-1.0]]), np.array([1, 0]), 0.5)
  assert b == pytest.approx(0.0, abs=1e-10)
  assert 1 / (1 + np.exp(w[0])) == pytest.approx(0.5 * w[0], abs=1e-10)
  # general data: the gradient of the penalised mean log-loss vanishes at the fit
  x = rng.normal(size=(80, 4))
  y = (rng.random(80) < 1 / (1 + np.exp(-x[:, 0]))).astype(int)
  w, b = polysemy.fit_logistic(x, y, 0.01)
  p = 1 / (1 + np.exp(-(x @ w + b)))
  np.testing.assert_allclose(x.T @ (p - y) / 80 + 0.01 * w, 0.0, atol=1e-8)
  assert np.mean(p - y) == pytest.approx(0.0, abs=1e-8)
  with pytest.raises(ValueError, match="positive penalty"):
    polysemy.fit_logistic(x, y, 0.0)
  with pytest.raises(ValueError, match="labels 0 and 1"):
    polysemy.fit_logistic(x, y + 1, 0.1)


def test_sentiment_probe_on_small_inputs(emb, monkeypatch):
  pos = ["good :)", "great day", "love it", "so happy", "nice one", "yay!!", "best ever", "wonderful"]
  neg = ["bad :(", "awful day", "hate it", "so sad", "terrible", "ugh...", "worst ever", "horrible"]

  def texts(items):
    return tuple(sentiment.Text(str(i), t.casefold(), t, r, 1, False) for i, (t, r) in enumerate(items))

  data = {
    s: texts([(t, 1.5) for t in pos] + [(t, -2.0) for t in neg[: 5 if s == "train" else 8]])
    for s in ("train", "val", "test")
  }
  monkeypatch.setattr(sentiment, "examples", lambda cfg: data)
  out = polysemy.sentiment_probe(emb, sentiment.Config(), l2_grid=(1e-2, 1.0))
  assert out["counts"] == {"train": 13, "val": 16, "test": 16}
  assert out["majority_class"] == 1 and out["majority_test_accuracy"] == 0.5
  assert 0 <= out["test_accuracy"] <= 1 and out["train_accuracy"] == 1.0  # 13 points in 32 dims: separable
  with pytest.raises(ValueError, match="target='binary'"):
    polysemy.sentiment_probe(emb, sentiment.Config(target="regression"))


# ------------------------------------------------------------------------------------------------- xling
def test_xling_recall_is_one_for_identical_sides(emb, monkeypatch):
  texts = [
    "open the file menu",
    "choose Format - Cells",
    "press Ctrl+F to search",
    "the sidebar deck",
    "insert a chart",
    "print the document",
  ]
  rows = tuple({"id": str(i), "file": "f", "split": "test", "a": t, "b": t} for i, t in enumerate(texts))
  monkeypatch.setattr(xling, "examples", lambda cfg: ({"train": (), "val": (), "test": rows}, {}))
  out = polysemy.xling_retrieval(emb, [xling.Config(pair=("en-us", "de")), xling.Config(pair=("en-us", "fr"))])
  assert [r["pair"] for r in out["pairs"]] == [["en-us", "de"], ["en-us", "fr"]]
  for r in out["pairs"]:
    assert r["n"] == 6 and r["recall_at_1_a_to_b"] == r["recall_at_1_b_to_a"] == 1.0 and r["chance"] == 1 / 6
  a = np.eye(3)
  assert polysemy.recall_at_1(a, a[[1, 0, 2]]) == (1 / 3, 1 / 3)


# --------------------------------------------------------------------------------------- write and CLI
def test_write_files(emb, monkeypatch, tmp_path):
  monkeypatch.setattr(wic, "pairs", lambda cfg: _fake_pairs(6))
  results = {
    "encoders": [
      {
        "name": "tiny",
        "kind": "checkpoint",
        "source": "x",
        "num_layers": 2,
        "d_model": 32,
        "max_tokens": 64,
        "wic": polysemy.wic_frozen(emb, wic.Config(), None),
      }
    ],
    "seconds": 1.0,
    "notes": polysemy._notes(True),
  }
  paths = polysemy.write(results, tmp_path / "results", "poly")
  assert {k: p.name for k, p in paths.items()} == {"json": "poly.json", "md": "poly.md", "png": "poly_wic.png"}
  assert json.loads(paths["json"].read_text())["encoders"][0]["wic"]["layers"][2]["layer"] == 2
  md = paths["md"].read_text()
  assert "| 2 |" in md and "not run for --checkpoint" in md
  assert paths["png"].read_bytes()[:4] == b"\x89PNG"
  with pytest.raises(ValueError, match="plain file stem"):
    polysemy.write(results, tmp_path, "../escape")


@pytest.mark.parametrize(
  "argv, match",
  [
    (["eval", "polysemy"], "at least one --pretrained"),
    (["eval", "polysemy", "--pretrained", "minilm", "--layers", "a,b"], "--layers 'a,b'"),
    (["eval", "polysemy", "--pretrained", "minilm", "--xling-pairs", "en-us"], "LANG:LANG"),
    (["eval", "polysemy", "--pretrained", "minilm", "--max-pairs", "1"], "--max-pairs 1"),
    (["eval", "polysemy", "--pretrained", "minilm", "--name", "a/b"], "plain file stem"),
    (["eval", "polysemy", "--checkpoint", "/nonexistent/run"], "is not a directory"),
    (["eval", "polysemy", "--pretrained", "minilm", "--xling-pairs", "en-us:zz"], "pair=\\('en-us', 'zz'\\)"),
  ],
)
def test_cli_bad_input(argv, match, capsys):
  assert main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("error:") and len(err.strip().splitlines()) == 1
  assert re.search(match, err), err
