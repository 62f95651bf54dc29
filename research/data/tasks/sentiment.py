"""``sentiment``: the VADER human sentiment ratings (kind ``classify`` or ``regress``).

Reference: C. J. Hutto and E. Gilbert. "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of
Social Media Text." ICWSM 2014. Texts and mean ratings (-4..+4) come from the ``vader`` corpus (PyPI sdist
``vaderSentiment==3.3.2``, ``additional_resources/hutto_ICWSM_2014.tar.gz``; see
research/data/corpora/vader.py).

``corpus`` picks one of ``movie``, ``amazon``, ``nyt``, ``tweets`` or pools them (``all``). ``target``:

* ``binary``: 2 classes, 1 if the mean rating is > 0, 0 if < 0; texts rated exactly 0 are dropped (the card
  says how many). Baseline: accuracy on test of the train split's majority class.
* ``regression``: the mean rating as float32. Baseline (``Task.baseline``): the test mean squared error of
  predicting the train mean.

Deduplication first: texts equal after collapsing whitespace become one example with the first text, the
first id and the mean of their ratings (the card counts merged texts and the groups whose ratings disagree
in sign). Case is kept: 64 groups of texts differ only in case, and VADER rated capitalisation on purpose
(``"Yay. Another good phone interview."`` 1.44 vs ``"YAY. ..."`` 1.87), so they stay separate examples.
Splits are by text: a personalised BLAKE2b hash of (seed, casefolded text) picks one of 1000 buckets, 80%
train, 10% val, 10% test, so no text, nor a case variant of it, is in two splits. A row is ``[CLS]`` +
sentencepiece ids, cut to ``max_len`` and padded with 0; the tokenizer is trained on the train texts only
(in corpus order), cached under ``<data dir>/tokenizers``.

The default corpus is ``tweets`` (4,200 texts) so that the default config stays a tiny CPU run; ``all``
pools 23,703 texts (23,618 after deduplication).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import numpy as np

from research.data import corpora, tokenizer
from research.data.tasks.base import SPLITS, Task, length_stats

CORPUS = "vader"
CHOICES = ("all", "movie", "amazon", "nyt", "tweets")
TARGETS = ("binary", "regression")
NUM_BUCKETS = 1000
BUCKET_UPPER = (800, 900, 1000)  # train, val, test
_PERSON = b"research-senti-1"


@dataclasses.dataclass(frozen=True)
class Config:
  corpus: str = "tweets"  # one of CHOICES
  target: str = "binary"  # one of TARGETS
  vocab_size: int = 4000  # sentencepiece vocabulary, trained on train texts
  max_len: int = 128  # tokens per row including [CLS]
  seed: int = 0  # split hash

  def __post_init__(self):
    if self.corpus not in CHOICES:
      raise ValueError(f"sentiment Config.corpus={self.corpus!r}; expected one of {', '.join(CHOICES)}")
    if self.target not in TARGETS:
      raise ValueError(f"sentiment Config.target={self.target!r}; expected one of {', '.join(TARGETS)}")
    checks = {
      "vocab_size": (self.vocab_size, 64, "an integer >= 64"),
      "max_len": (self.max_len, 2, "an integer >= 2"),
      "seed": (self.seed, 0, "an integer >= 0"),
    }
    for name, (value, low, expected) in checks.items():
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"sentiment Config.{name}={value!r}; expected {expected}")


@dataclasses.dataclass(frozen=True)
class Text:
  id: str  # the first corpus id of the group, e.g. "movie:1"
  key: str  # split key: casefolded, whitespace collapsed (case variants share a split)
  text: str  # the first text of the group
  rating: float  # mean of the group's ratings
  members: int  # corpus documents merged into this one
  sign_conflict: bool  # the merged ratings disagree in sign


def collapse(text: str) -> str:
  return " ".join(text.split())


@functools.lru_cache(maxsize=len(CHOICES))
def texts(corpus: str) -> tuple[Text, ...]:
  """Deduplicated texts of one corpus (or all), in corpus order."""
  groups: dict[str, list[dict]] = {}
  for doc in corpora.read(CORPUS):
    if corpus in ("all", doc["corpus"]):
      groups.setdefault(collapse(doc["text"]), []).append(doc)
  out = []
  for text, docs in groups.items():
    ratings = [d["rating"] for d in docs]
    signs = {np.sign(r) for r in ratings}
    out.append(
      Text(docs[0]["id"], text.casefold(), docs[0]["text"], float(np.mean(ratings)), len(docs), len(signs) > 1)
    )
  return tuple(out)


def split_of(key: str, seed: int) -> str:
  """train/val/test of a split key (:attr:`Text.key`): 80/10/10 by a seeded hash bucket."""
  digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8, person=_PERSON).digest()
  bucket = int.from_bytes(digest, "little") % NUM_BUCKETS
  return next(s for s, upper in zip(SPLITS, BUCKET_UPPER, strict=True) if bucket < upper)


@functools.lru_cache(maxsize=16)
def examples(cfg: Config) -> dict[str, tuple[Text, ...]]:
  """The texts of each split; row i of split s in :func:`build` is ``examples(cfg)[s][i]``."""
  out = {s: [] for s in SPLITS}
  for t in texts(cfg.corpus):
    if cfg.target == "binary" and t.rating == 0:
      continue
    out[split_of(t.key, cfg.seed)].append(t)
  return {s: tuple(v) for s, v in out.items()}


def train_texts(corpus: str, seed: int) -> list[str]:
  """Every train text of the corpus (zero-rated ones too: the split does not depend on the target)."""
  return [t.text for t in texts(corpus) if split_of(t.key, seed) == "train"]


@functools.lru_cache(maxsize=16)
def sentencepiece(corpus: str, vocab_size: int, seed: int) -> tokenizer.SentencePieceTokenizer:
  """The task's tokenizer: trained on the train texts only, cached on disk."""
  options = tokenizer.SentencePieceOptions(vocab_size=vocab_size)
  return tokenizer.cached_sentencepiece(
    f"sentiment-{corpus}", lambda: train_texts(corpus, seed), options, corpora.data_dir() / "tokenizers"
  )


def _arrays(split: tuple[Text, ...], tok, cfg: Config) -> tuple[dict[str, np.ndarray], np.ndarray]:
  ids = tok.encode_batch([t.text for t in split])
  full = np.array([len(x) + 1 for x in ids], np.int32)
  tokens = np.zeros((len(split), cfg.max_len), np.int32)
  tokens[:, 0] = tokenizer.CLS
  for i, x in enumerate(ids):
    x = x[: cfg.max_len - 1]
    tokens[i, 1 : 1 + len(x)] = x
  ratings = np.array([t.rating for t in split], np.float32)
  targets = (ratings > 0).astype(np.int32) if cfg.target == "binary" else ratings
  arrays = {"tokens": tokens, "lengths": np.minimum(full, cfg.max_len), "targets": targets}
  for v in arrays.values():
    v.setflags(write=False)
  return arrays, full


@functools.lru_cache(maxsize=16)
def build(cfg: Config) -> Task:
  split_texts = examples(cfg)
  if not all(split_texts.values()):
    raise ValueError(f"sentiment: an empty split with {cfg} ({ {s: len(t) for s, t in split_texts.items()} })")
  tok = sentencepiece(cfg.corpus, cfg.vocab_size, cfg.seed)
  splits, full = {}, {}
  for s in SPLITS:
    splits[s], full[s] = _arrays(split_texts[s], tok, cfg)
  pool = texts(cfg.corpus)
  train_targets, test_targets = splits["train"]["targets"], splits["test"]["targets"]
  card = {
    "source": "PyPI sdist vaderSentiment==3.3.2, additional_resources/hutto_ICWSM_2014.tar.gz (corpus 'vader')",
    "corpus": cfg.corpus,
    "target": cfg.target,
    "documents": sum(t.members for t in pool),
    "duplicates_merged": sum(t.members - 1 for t in pool),
    "duplicate_groups_sign_conflict": sum(t.sign_conflict for t in pool),
    "zero_rated_dropped": sum(t.rating == 0 for t in pool) if cfg.target == "binary" else 0,
    "sizes": {s: len(split_texts[s]) for s in SPLITS},
    "tokenizer": f"sentencepiece unigram, vocab {tok.vocab_size}, "
    f"trained on {len(train_texts(cfg.corpus, cfg.seed))} train texts",
    "lengths": {s: length_stats(full[s]) for s in SPLITS},  # before truncation, incl. [CLS]
    "truncated": {s: int((full[s] > cfg.max_len).sum()) for s in SPLITS},
  }
  if cfg.target == "binary":
    majority_class = int(np.bincount(train_targets, minlength=2).argmax())
    baseline = float((test_targets == majority_class).mean())
    card["classes"] = {"0": "negative (rating < 0)", "1": "positive (rating > 0)"}
    card["balance"] = {s: float(splits[s]["targets"].mean()) for s in SPLITS}  # fraction positive
    card["baseline"] = f"test accuracy of the train majority class ({majority_class}): {baseline:.4f}"
    return Task("sentiment", "classify", splits, tok.vocab_size, cfg.max_len, 2, baseline, card, tokenizer=tok)
  mean = float(train_targets.mean())
  baseline = float(np.mean((test_targets.astype(np.float64) - mean) ** 2))
  card["ratings"] = {
    s: {"mean": float(splits[s]["targets"].mean()), "std": float(splits[s]["targets"].std())} for s in SPLITS
  }
  card["baseline"] = f"test MSE of predicting the train mean ({mean:.4f}): {baseline:.4f}"
  return Task("sentiment", "regress", splits, tok.vocab_size, cfg.max_len, 1, baseline, card, tokenizer=tok)
