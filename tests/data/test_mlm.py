"""MLM pretraining stream (research/data/tasks/mlm.py): masking statistics, splits, self-pretraining, corpora."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest

from research.data import corpora, pipeline, tasks, tokenizer
from research.data.tasks import listops, mlm

FIXTURES = Path(__file__).parent / "fixtures"
LISTOPS = {"num_train": 200, "num_val": 20, "num_test": 20}


def segments(split: dict, key: str = "targets") -> list[np.ndarray]:
  """Every (row, segment) of a packed split, as a token array, in row order."""
  rows = zip(split[key], split["segment_ids"], strict=True)
  return [row[seg == s] for row, seg in rows for s in range(1, seg.max() + 1)]


@pytest.mark.parametrize("rate", [0.15, 0.3])
def test_masking_statistics(rate):
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 1000, (800, 160)).astype(np.int32)
  tokens[:, 150:] = 0  # padding
  segment_ids = np.where(tokens > 0, 1, 0).astype(np.int32)
  row = {"tokens": tokens, "segment_ids": segment_ids}
  ok = mlm.eligible(row)
  assert ok.sum() > 100_000 and not ok[tokens < 5].any()
  inputs, targets, weights = mlm.mask_tokens(tokens, ok, rate, 1000, np.random.default_rng(1))
  selected = weights > 0
  np.testing.assert_array_equal(targets, tokens)
  assert not selected[~ok].any()  # never padding or special ids
  assert abs(selected.sum() / ok.sum() - rate) < 0.005
  np.testing.assert_array_equal(inputs[~selected], tokens[~selected])
  masked = selected & (inputs == tokenizer.MASK)
  randomised = selected & (inputs != tokenizer.MASK) & (inputs != tokens)
  kept = selected & (inputs == tokens)
  n = selected.sum()
  assert abs(masked.sum() / n - 0.8) < 0.01
  assert abs(randomised.sum() / n - 0.1) < 0.01 and abs(kept.sum() / n - 0.1) < 0.01
  assert inputs[randomised].min() >= 5 and inputs[randomised].max() < 1000
  assert inputs.dtype == targets.dtype == np.int32 and weights.dtype == np.float32
  again = mlm.mask_tokens(tokens, ok, rate, 1000, np.random.default_rng(1))
  for x, y in zip(again, (inputs, targets, weights), strict=True):
    np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------------------ self-pretraining
@pytest.fixture(scope="module")
def listops_mlm():
  return tasks.build("mlm", {"self_task": "listops", "self_task_cfg": LISTOPS, "seq_len": 128})


def test_self_task_uses_only_the_train_inputs(listops_mlm):
  task = listops_mlm
  assert (task.kind, task.seq_len, task.vocab_size, task.num_classes) == ("tokens", 128, len(listops.VOCAB) + 4, 21)
  source = listops.build_splits(listops.ListOpsConfig(**LISTOPS))
  expected = collections.Counter(
    tuple((row[1:n] + 4).tolist()) for row, n in zip(source["train"].tokens, source["train"].lengths, strict=True)
  )
  held_out = {
    tuple((row[1:n] + 4).tolist())
    for split in ("val", "test")
    for row, n in zip(source[split].tokens, source[split].lengths, strict=True)
  }
  # expressions have <= 128 tokens after the CLS is stripped, so every segment is one whole sequence
  got = {s: collections.Counter(tuple(seq.tolist()) for seq in segments(a)) for s, a in task.splits.items()}
  assert got["train"] + got["val"] + got["test"] == expected  # exactly the train inputs, each once
  assert not held_out & set(expected)  # listops val/test inputs never enter MLM
  for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
    assert not set(got[a]) & set(got[b])  # disjoint by sequence
  assert task.card["id_offset"] == 4 and task.card["cls_stripped"] is True
  assert sum(task.card["documents"].values()) == 200


def test_eval_splits_are_masked_once_and_train_map_masks_dynamically(listops_mlm):
  task = listops_mlm
  for split in ("val", "test"):
    arrays = task.splits[split]
    w = arrays["weights"] > 0
    assert w.any() and not w[arrays["segment_ids"] == 0].any()
    assert (arrays["tokens"][w & (arrays["tokens"] != arrays["targets"])] != 0).all()
    assert arrays["targets"].max() < task.vocab_size and not arrays["tokens"].flags.writeable
  train = task.splits["train"]
  assert not train["weights"].any()
  np.testing.assert_array_equal(train["targets"], train["tokens"])
  row = {k: v[0] for k, v in train.items()}
  a, b = task.train_map(row, np.random.default_rng(1)), task.train_map(row, np.random.default_rng(2))
  again = task.train_map(row, np.random.default_rng(1))
  assert not np.array_equal(a["weights"], b["weights"])
  np.testing.assert_array_equal(a["tokens"], again["tokens"])
  np.testing.assert_array_equal(a["targets"], row["tokens"])
  np.testing.assert_array_equal(a["positions"], row["positions"])
  rng = np.random.default_rng(3)
  masked = [
    task.train_map({k: v[i] for k, v in train.items()}, rng)["weights"].sum() for i in range(len(train["tokens"]))
  ]
  assert abs(sum(masked) / (train["tokens"] >= 5).sum() - 0.15) < 0.02


def test_grain_pipeline_masks_train_rows(listops_mlm):
  ds = pipeline.train_dataset(listops_mlm, 8, seed=0)
  first, again = ds[0], ds[0]
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])  # batch t is a function of t
  batches = [ds[t] for t in range(26)]  # two epochs of 13 batches
  weights = np.concatenate([b["weights"] for b in batches])
  targets = np.concatenate([b["targets"] for b in batches])
  inputs = np.concatenate([b["tokens"] for b in batches])
  assert abs(weights.sum() / (targets >= 5).sum() - 0.15) < 0.02
  assert ((inputs == tokenizer.MASK) <= (weights > 0)).all() and (inputs[weights == 0] == targets[weights == 0]).all()


# ---------------------------------------------------------------------------- corpora (fake data dir)
@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
  """A data dir holding tiny "python-doc" (English + German lines) and "wordnet" (French lines) corpora."""
  root = tmp_path_factory.mktemp("research-data")
  texts = {lang: (FIXTURES / f"tok_{lang}.txt").read_text(encoding="utf-8").splitlines() for lang in ("en", "de", "fr")}
  for name, lines in (("python-doc", texts["en"] + texts["de"]), ("wordnet", texts["fr"])):
    out = root / "corpora" / name
    out.mkdir(parents=True)
    docs = [{"id": f"doc{i:03d}", "text": line} for i, line in enumerate(lines)]
    (out / "documents.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
    (out / "manifest.json").write_text(json.dumps({"name": name, "source": f"test:{name}", "documents": len(docs)}))
  return root


FAKE = {
  "corpora": ("python-doc", "wordnet"),
  "vocab_size": 400,
  "model_type": "bpe",
  "seq_len": 128,
  "max_documents": 0,
}


def test_corpus_split_by_document_and_tokenizer_trained_on_train(fake_data, monkeypatch):
  monkeypatch.setenv(corpora.DATA_ENV, str(fake_data))
  seen = []
  original = tokenizer.cached_sentencepiece

  def spy(name, sentences_fn, options, cache_dir):
    seen.append((list(sentences_fn()), Path(cache_dir)))
    return original(name, sentences_fn, options, cache_dir)

  monkeypatch.setattr(tokenizer, "cached_sentencepiece", spy)
  mlm._build.cache_clear()
  task = tasks.build("mlm", FAKE)
  docs = {f"{c}/{d['id']}": d["text"] for c in FAKE["corpora"] for d in corpora.read(c)}
  expected = {s: sorted(t for i, t in docs.items() if mlm.split_of(i) == s) for s in ("train", "val", "test")}
  assert all(expected.values()) and task.card["documents"] == {s: len(v) for s, v in expected.items()}
  [(sentences, cache_dir)] = seen
  assert sorted(sentences) == expected["train"] and cache_dir == fake_data / "tokenizers"
  [model] = cache_dir.glob("*.model")
  tok = tokenizer.load(model)
  assert task.vocab_size == tok.vocab_size == task.num_classes
  assert max(len(tok.encode(t)) for t in docs.values()) <= 128  # no document is cut: segment = document
  for split, arrays in task.splits.items():
    assert sorted(tok.decode(seg) for seg in segments(arrays)) == expected[split]  # one segment per document
    assert arrays["tokens"].dtype == arrays["segment_ids"].dtype == arrays["positions"].dtype == np.int32
    assert arrays["weights"].dtype == np.float32 and arrays["tokens"].shape[1] == 128
  test = task.splits["test"]
  top = np.bincount(task.splits["train"]["tokens"][task.splits["train"]["tokens"] >= 5]).argmax()
  assert task.baseline == pytest.approx(np.mean(test["targets"][test["weights"] > 0] == top))
  assert task.card["source"] == {"python-doc": "test:python-doc", "wordnet": "test:wordnet"}


def test_corpus_determinism_by_seed(fake_data, monkeypatch):
  monkeypatch.setenv(corpora.DATA_ENV, str(fake_data))
  mlm._build.cache_clear()
  a = tasks.build("mlm", {**FAKE, "seed": 1})
  mlm._build.cache_clear()
  b = tasks.build("mlm", {**FAKE, "seed": 1})
  c = tasks.build("mlm", {**FAKE, "seed": 2})
  for split in ("train", "val", "test"):
    for key in a.splits[split]:
      np.testing.assert_array_equal(a.splits[split][key], b.splits[split][key])
    np.testing.assert_array_equal(a.splits[split]["targets"], c.splits[split]["targets"])  # same documents
  assert not np.array_equal(a.splits["val"]["weights"], c.splits["val"]["weights"])  # other masks


def test_max_documents_nests_and_empty_splits_are_refused(fake_data, monkeypatch):
  monkeypatch.setenv(corpora.DATA_ENV, str(fake_data))
  ids = [f"id{i}" for i in range(50)]
  small, large = mlm.select(ids, 10), mlm.select(ids, 30)
  assert len(small) == 10 and set(small) < set(large) and small == sorted(small)
  assert mlm.select(ids, 0) == list(range(50))
  with pytest.raises(ValueError, match=r"got no documents.*raise max_documents=1"):
    tasks.build("mlm", {**FAKE, "max_documents": 1})


def test_missing_corpus_names_the_install_command(tmp_path, monkeypatch):
  monkeypatch.setenv(corpora.DATA_ENV, str(tmp_path))
  with pytest.raises(corpora.CorpusError, match="research data install python-doc"):
    tasks.build("mlm", {"corpora": ("python-doc",)})


@pytest.mark.parametrize(
  "field, value",
  [
    ("corpora", ("no-such-corpus",)),
    ("corpora", ()),
    ("corpora", "python-doc"),
    ("self_task", "mlm"),
    ("self_task", "nope"),
    ("self_task_cfg", (("num_train", 5),)),
    ("vocab_size", 8),
    ("model_type", "word"),
    ("seq_len", 1),
    ("mask_rate", 0.0),
    ("mask_rate", 0.6),
    ("max_documents", -1),
    ("seed", -1),
    ("seed", 1.5),
  ],
)
def test_bad_config_names_the_field(field, value):
  with pytest.raises(ValueError, match=rf"^{field}=.*expected"):
    mlm.Config(**{field: value})


def test_self_task_cfg_from_plain_data_is_hashable():
  cfg = tasks.make_config("mlm", {"self_task": "listops", "self_task_cfg": [["num_train", 200], ["num_val", 20]]})
  assert cfg.self_task_cfg == (("num_train", 200), ("num_val", 20)) and hash(cfg)
  assert mlm.Config(self_task="listops", self_task_cfg={"num_val": 20, "num_train": 200}) == cfg


# ----------------------------------------------------------------------------------- installed corpus
@pytest.fixture(scope="module")
def python_doc():
  corpora.install("python-doc")  # idempotent: CI installs it first
  return corpora.read("python-doc")


def test_python_doc_corpus(python_doc):
  cfg = {"corpora": ("python-doc",), "vocab_size": 1000, "model_type": "bpe", "max_documents": 40}
  task = tasks.build("mlm", cfg)
  ids = [f"python-doc/{d['id']}" for d in python_doc]
  chosen = [ids[i] for i in mlm.select(ids, 40)]
  counts = collections.Counter(mlm.split_of(i) for i in chosen)
  assert task.card["documents"] == {s: counts[s] for s in ("train", "val", "test")} and min(counts.values()) > 0
  assert task.card["source"] == {"python-doc": "deb:python3.11-doc"} and task.vocab_size == 1000
  for split in ("val", "test"):
    arrays = task.splits[split]
    w = arrays["weights"] > 0
    assert abs(w.sum() / mlm.eligible({**arrays, "tokens": arrays["targets"]}).sum() - 0.15) < 0.02
  train = task.splits["train"]
  assert task.card["tokens"]["train"] == int((train["segment_ids"] > 0).sum()) > 50_000
  assert task.card["padding_after"]["train"] <= task.card["padding_before"]["train"]
  assert 0.0 < task.baseline < 0.2
