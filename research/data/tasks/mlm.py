"""Masked-language-model pretraining stream (kind "tokens") over installed corpora or a task's own inputs.

Masking follows BERT (Devlin et al. 2019, arXiv:1810.04805, section 3.1 and appendix A.1) with the
per-position Bernoulli selection of RoBERTa / HuggingFace ``DataCollatorForLanguageModeling``: every
eligible position (segment id > 0 and token id >= 5, i.e. never padding, ``<unk>``, [CLS], [SEP] or
[MASK]) is selected independently with probability ``mask_rate``; of the selected positions 80% become
[MASK] (id 4), 10% a token drawn uniformly from the non-special ids ``[5, vocab_size)`` and 10% stay
unchanged. ``targets`` are the original tokens everywhere; ``weights`` are 1 exactly at the selected
positions. The issue asks for rates of 15-30%; :class:`Config` accepts any rate in (0, 0.5].

Two sources of text:

* **Corpora** (``corpora``, default ``("python-doc",)``): every document's ``"text"`` of the named installed
  corpora (``research data install NAME``). Document ``<corpus>/<id>`` goes to train/val/test (80/10/10) by
  a BLAKE2b hash of that string alone, so splits are disjoint by document and do not depend on the seed
  or on ``max_documents``. ``max_documents > 0`` keeps the documents with the smallest values of a second,
  independent hash (a smaller limit gives a subset of a larger one). A sentencepiece model
  (``vocab_size``, ``model_type``; research/data/tokenizer.py) is trained on the lines of the TRAIN
  documents only and cached under ``<data dir>/tokenizers``; each document is encoded as one sequence.
* **Self-pretraining** (``self_task`` = a task name, ``self_task_cfg`` = its options as (key, value) pairs):
  the input sequences of that task's TRAIN split only (``tokens``/``lengths``, and ``tokens_b``/``lengths_b``
  for pair/match tasks; per segment for packed tasks), with a leading CLS removed when every sequence has
  one. Each sequence is a document whose id is a hash of its token ids (equal sequences share a split).
  Token ids keep the task's vocabulary, so the pretrained embeddings transfer, except for a task module
  that declares its own ``CLS_ID`` != 2 (ListOps: pad 0, CLS 1, operators from 2): its non-pad ids are
  shifted by +4 past the project's special ids 0..4, and the vocabulary grows by 4 (``card["id_offset"]``).
  ``vocab_size``, ``model_type`` and ``max_documents`` are unused in this mode (the task's own options
  set its size).

Each split's documents are packed with :func:`research.data.packing.pack` into ``seq_len`` rows (longer
documents are cut into ``seq_len`` chunks first) with ``segment_ids`` and ``positions``. The train split is
stored unmasked (``weights`` 0) and ``Task.train_map(row, rng)`` masks one row afresh every time it is
read (dynamic masking, RoBERTa section 4.1); val and test are masked once at build time with an rng seeded
by ``seed``, so evaluation is fixed. ``baseline``: accuracy on the masked test positions of always
predicting the most frequent eligible train token.

Default config (python-doc, 100 documents, unigram 8000, seq_len 128), measured on 2 CPU cores: 83/8/9
documents, 3405/154/202 rows, about 10 s for the first build (sentencepiece training) and 1 s once the
tokenizer is cached.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Mapping

import numpy as np

from research.data import corpora, packing, tasks, tokenizer
from research.data.tasks.base import SPLITS, Task, length_stats

FIRST_TOKEN = 5  # ids below are pad, unk, [CLS], [SEP], [MASK] (research/data/tokenizer.py)
MAX_MASK_RATE = 0.5
_SPLIT_UPPER = (800, 900, 1000)  # hash bucket (of 1000) < upper -> train, val, test
_STREAM_TAG = 0x4D4C4D  # "MLM": mixed into the masking seed


@dataclasses.dataclass(frozen=True)
class Config:
  corpora: tuple[str, ...] = ("python-doc",)
  self_task: str = ""  # a task name: MLM on that task's train inputs instead of corpora
  self_task_cfg: tuple[tuple[str, object], ...] = ()  # that task's options, e.g. (("num_train", 200),)
  vocab_size: int = 8000  # sentencepiece vocabulary (corpora mode)
  model_type: str = "unigram"  # sentencepiece "unigram" or "bpe" (corpora mode)
  seq_len: int = 128
  mask_rate: float = 0.15
  max_documents: int = 100  # corpora mode: at most this many documents (0: all)
  seed: int = 0

  def __post_init__(self):
    pairs = self.self_task_cfg.items() if isinstance(self.self_task_cfg, Mapping) else self.self_task_cfg
    try:
      pairs = tuple(sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in pairs))
      hash(pairs)
    except (TypeError, ValueError):
      raise ValueError(
        f"self_task_cfg={self.self_task_cfg!r}; expected (key, value) pairs or a mapping with hashable values"
      ) from None
    object.__setattr__(self, "self_task_cfg", pairs)
    ints = {"vocab_size": 16, "seq_len": 2, "max_documents": 0, "seed": 0}
    for name, low in ints.items():
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name}={value!r}; expected an integer >= {low}")
    if self.self_task:
      if self.self_task not in tasks.NAMES or self.self_task == "mlm":
        raise ValueError(
          f"self_task={self.self_task!r}; expected one of "
          f"{', '.join(n for n in tasks.NAMES if n != 'mlm')} (or '' for corpora)"
        )
    elif self.self_task_cfg:
      raise ValueError(f"self_task_cfg={self.self_task_cfg!r}; expected () when self_task is ''")
    elif not isinstance(self.corpora, tuple) or not self.corpora or any(c not in corpora.names() for c in self.corpora):
      raise ValueError(f"corpora={self.corpora!r}; expected a non-empty tuple of {', '.join(corpora.names())}")
    if self.model_type not in tokenizer.MODEL_TYPES:
      raise ValueError(f"model_type={self.model_type!r}; expected one of {', '.join(tokenizer.MODEL_TYPES)}")
    rate = self.mask_rate
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= MAX_MASK_RATE:
      raise ValueError(f"mask_rate={rate!r}; expected a number in (0, {MAX_MASK_RATE}] (BERT uses 0.15)")


def mask_tokens(
  tokens: np.ndarray, eligible: np.ndarray, rate: float, vocab_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """BERT's 80/10/10 masking of any-shaped int tokens -> (inputs int32, targets int32, weights float32).

  Positions where ``eligible`` is False are never selected; random replacements are drawn from
  ``[5, vocab_size)``. Consumes the rng in a fixed order (select, action, replacements).
  """
  if vocab_size <= FIRST_TOKEN:
    raise ValueError(f"vocab_size={vocab_size}; expected more than {FIRST_TOKEN} ids (0..4 are special)")
  tokens = np.asarray(tokens, np.int32)
  selected = np.asarray(eligible, bool) & (rng.random(tokens.shape) < rate)
  action = rng.random(tokens.shape)
  inputs = tokens.copy()
  inputs[selected & (action < 0.8)] = tokenizer.MASK
  randomised = selected & (action >= 0.8) & (action < 0.9)
  inputs[randomised] = rng.integers(FIRST_TOKEN, vocab_size, size=int(randomised.sum()), dtype=np.int32)
  return inputs, tokens.copy(), selected.astype(np.float32)


def eligible(row: Mapping[str, np.ndarray]) -> np.ndarray:
  return (np.asarray(row["segment_ids"]) > 0) & (np.asarray(row["tokens"]) >= FIRST_TOKEN)


def mask_row(row: Mapping[str, np.ndarray], rng: np.random.Generator, *, rate: float, vocab_size: int) -> dict:
  """Task.train_map: a new dict with the (unmasked) row's tokens masked, targets and weights."""
  inputs, targets, weights = mask_tokens(row["tokens"], eligible(row), rate, vocab_size, rng)
  return {**row, "tokens": inputs, "targets": targets, "weights": weights}


def _hash(text: str, person: bytes) -> int:
  return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8, person=person).digest(), "little")


def split_of(doc_id: str) -> str:
  """ "train", "val" or "test" for a document id (80/10/10 by hash; independent of seed and config)."""
  bucket = _hash(doc_id, b"mlm-split-v1") % _SPLIT_UPPER[-1]
  return next(s for s, upper in zip(SPLITS, _SPLIT_UPPER, strict=True) if bucket < upper)


def select(ids: list[str], max_documents: int) -> list[int]:
  """Indices (in input order) of the max_documents ids with the smallest selection hash; all if 0."""
  if not max_documents or max_documents >= len(ids):
    return list(range(len(ids)))
  ranked = sorted(range(len(ids)), key=lambda i: (_hash(ids[i], b"mlm-select-v1"), ids[i]))
  return sorted(ranked[:max_documents])


def corpus_documents(cfg: Config) -> tuple[dict[str, list[np.ndarray]], dict[str, int], int, dict]:
  """Corpora mode: per-split token sequences, documents per split, vocab size, card facts."""
  ids, texts = [], []
  for name in cfg.corpora:
    for doc in corpora.read(name):
      ids.append(f"{name}/{doc['id']}")
      texts.append(doc["text"])
  keep = select(ids, cfg.max_documents)
  by_split = {s: [i for i in keep if split_of(ids[i]) == s] for s in SPLITS}
  options = tokenizer.SentencePieceOptions(vocab_size=cfg.vocab_size, model_type=cfg.model_type)
  tok = tokenizer.cached_sentencepiece(
    f"mlm-{'+'.join(cfg.corpora)}",
    lambda: [line for i in by_split["train"] for line in texts[i].splitlines()],
    options,
    corpora.data_dir() / "tokenizers",
  )
  seqs = {
    s: [np.asarray(t, np.int32) for t in tok.encode_batch([texts[i] for i in idx])] for s, idx in by_split.items()
  }
  sources = [(corpora.manifest(n) or {}).get("source", "?") for n in cfg.corpora]
  card = {
    "source": dict(zip(cfg.corpora, sources, strict=True)),
    "tokenizer": {"model_type": cfg.model_type, "vocab_size": tok.vocab_size, "trained_on": "train documents"},
  }
  card["_tokenizer"] = tok  # popped by _build into Task.tokenizer
  return seqs, {s: len(idx) for s, idx in by_split.items()}, tok.vocab_size, card


def task_sequences(cfg: Config) -> tuple[dict[str, list[np.ndarray]], dict[str, int], int, dict]:
  """Self-pretraining mode: the train inputs of cfg.self_task, split into mlm train/val/test by content."""
  task = tasks.build(cfg.self_task, dict(cfg.self_task_cfg))
  train = task.splits["train"]
  seqs = []
  for key, lengths_key in (("tokens", "lengths"), ("tokens_b", "lengths_b")):
    if key not in train:
      continue
    if lengths_key in train:
      seqs += [row[:n] for row, n in zip(train[key], train[lengths_key], strict=True)]
    else:
      seqs += [
        row[seg == s]
        for row, seg in zip(train[key], train["segment_ids"], strict=True)
        for s in np.unique(seg[seg > 0])
      ]
  cls = getattr(tasks.module(cfg.self_task), "CLS_ID", tokenizer.CLS)
  strip = all(len(s) and s[0] == cls for s in seqs)
  offset = 0 if cls == tokenizer.CLS else FIRST_TOKEN - 1
  seqs = [np.where(s > 0, s + offset, 0).astype(np.int32)[int(strip) :] for s in seqs]
  ids = [hashlib.blake2b(s.tobytes(), digest_size=16).hexdigest() for s in seqs]
  by_split = {s: [seq for seq, i in zip(seqs, ids, strict=True) if split_of(i) == s] for s in SPLITS}
  card = {
    "source": f"train split of task {cfg.self_task!r} {dict(cfg.self_task_cfg)}",
    "cls_stripped": strip,
    "id_offset": offset,
    "_tokenizer": task.tokenizer if offset == 0 else None,
  }  # ids unchanged: same tokenizer
  return by_split, {s: len(v) for s, v in by_split.items()}, task.vocab_size + offset, card


def build(cfg: Config) -> Task:
  return _build(cfg, str(corpora.data_dir()))


@functools.lru_cache(maxsize=8)
def _build(cfg: Config, data_dir: str) -> Task:  # data_dir: part of the cache key only
  del data_dir
  seqs, documents, vocab_size, card = (task_sequences if cfg.self_task else corpus_documents)(cfg)
  tok = card.pop("_tokenizer", None)
  empty = [s for s in SPLITS if not documents[s]]
  if empty:
    raise ValueError(
      f"mlm: split(s) {empty} got no documents ({documents}); raise max_documents={cfg.max_documents} or use more text"
    )
  splits, packed = {}, {}
  for index, split in enumerate(SPLITS):
    p = packed[split] = packing.pack(seqs[split], cfg.seq_len)
    row = {"tokens": p.tokens, "segment_ids": p.segment_ids, "positions": p.positions}
    if split == "train":
      row.update(targets=p.tokens.copy(), weights=np.zeros(p.tokens.shape, np.float32))
    else:
      rng = np.random.default_rng([_STREAM_TAG, cfg.seed, index])
      row = mask_row(row, rng, rate=cfg.mask_rate, vocab_size=vocab_size)
    for a in row.values():
      a.setflags(write=False)
    splits[split] = row

  train = splits["train"]
  counts = np.bincount(train["tokens"][eligible(train)], minlength=vocab_size)
  top = int(np.argmax(counts))
  test = splits["test"]
  masked = test["weights"] > 0
  baseline = float(np.mean(test["targets"][masked] == top)) if masked.any() else 0.0
  card.update(
    documents=documents,
    rows={s: packed[s].num_rows for s in SPLITS},
    tokens={s: int((splits[s]["segment_ids"] > 0).sum()) for s in SPLITS},
    padding_before={s: round(packed[s].padding_before, 4) for s in SPLITS},
    padding_after={s: round(packed[s].padding_after, 4) for s in SPLITS},
    document_tokens=length_stats([len(x) for x in seqs["train"]]),
    masked_positions={s: int(splits[s]["weights"].sum()) for s in ("val", "test")},
    mask_rate=cfg.mask_rate,
    seq_len=cfg.seq_len,
    baseline=f"predict the most frequent train token (id {top}) at every masked test position",
  )
  train_map = functools.partial(mask_row, rate=cfg.mask_rate, vocab_size=vocab_size)
  return Task("mlm", "tokens", splits, vocab_size, cfg.seq_len, vocab_size, baseline, card, train_map, tok)
