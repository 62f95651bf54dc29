"""Cross-lingual paragraph retrieval over the aligned LibreOffice help (kind "match", dual encoder).

Source: two ``libreoffice-help-<lang>`` corpora (research/data/corpora/libreoffice.py; Debian packages
``libreoffice-help-<lang>``, ``usr/share/libreoffice/help/<dir>/text/**/*.html``). Row i of ``tokens`` is a
paragraph in language ``pair[0]``; row i of ``tokens_b`` is the paragraph with the same ``file#id`` in
``pair[1]``: its translation. A model embeds both sides and is trained with in-batch negatives (every other
row of the batch is a wrong candidate); evaluation ranks the b-rows of an eval batch for each a-row.

Examples, in this order:

1. pairs = ids present in both languages, sorted by id;
2. dropped: a text shorter than ``min_chars`` characters in either language (headings like "Symbol"), and
   pairs whose two texts are identical (untranslated strings, code, names);
3. deduplicated: a pair whose a-text or b-text already occurred in an earlier pair (sorted id order) is
   dropped, so no text is in two splits and no in-batch candidate duplicates the right answer;
4. split by page: a personalised BLAKE2b hash of the file path (``text/…/x.html``) puts the file in one of
   1000 buckets, 80% train, 10% val, 10% test. The split depends on the file path alone (not on the seed,
   the languages or the sizes), so no page contributes to two splits and the test pages are the same for
   every pair of languages;
5. each split is shuffled with the seed and cut to ``num_train``/``num_val``/``num_test`` pairs (fewer if the
   split has fewer), and stored in that shuffled order, so consecutive eval rows come from random pages.

The tokenizer is ONE sentencepiece model (unigram, byte fallback, research/data/tokenizer.py) trained on the
train pairs only, both languages at once in interleaved order a0, b0, a1, b1, …, cached under
``<data dir>/tokenizers``. Rows are ``[CLS] + pieces`` cut to ``max_len`` and padded with 0.

The task has no majority class: chance retrieval accuracy is 1/B for an eval batch of B rows, which the
task cannot know, so ``baseline`` is 0.0 and the card says so.

Measured for en-us -> de: 64,564 aligned ids; 27,668 dropped as shorter than 20 characters, 969 as
identical, 8,632 as duplicates; 27,295 pairs remain (train 22,280, val 2,418, test 2,597). The default
config keeps 4,000/500/500 of them and builds in about 4 s on one core when the tokenizer is trained
(about 1 s once it is cached).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import time

import numpy as np

from research.data import corpora, tokenizer
from research.data.corpora import libreoffice
from research.data.tasks.base import SPLITS, Task, length_stats

SPLIT_UPPER = (800, 900, 1000)  # bucket b (of 1000) goes to the first split s with b < SPLIT_UPPER[s]
HASH_PERSON = b"xling-file-v1"


@dataclasses.dataclass(frozen=True)
class Config:
  pair: tuple[str, str] = ("en-us", "de")  # languages of side a (query) and side b (candidates)
  vocab_size: int = 8000  # sentencepiece vocabulary, specials included (an upper bound: see tokenizer.py)
  max_len: int = 64  # tokens per row, CLS included
  min_chars: int = 20  # drop pairs with a shorter text on either side
  num_train: int = 4000  # at most this many pairs per split
  num_val: int = 500
  num_test: int = 500
  seed: int = 0  # subsample and order of each split (the split itself is fixed by file)

  def __post_init__(self):
    pair = tuple(self.pair) if isinstance(self.pair, list) else self.pair
    object.__setattr__(self, "pair", pair)
    if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
      raise ValueError(f"pair={pair!r}; expected a tuple of two language codes like ('en-us', 'de')")
    for lang in pair:  # a registered libreoffice-help-<lang> corpus
      try:
        libreoffice.check_lang(lang)
      except ValueError as e:
        raise ValueError(f"pair={pair!r}: {e}") from None
    if pair[0] == pair[1]:
      raise ValueError(f"pair={pair!r}; expected two different languages")
    bounds = {
      "vocab_size": (64, "an integer >= 64"),
      "max_len": (2, "an integer >= 2 (CLS + one piece)"),
      "min_chars": (0, "an integer >= 0"),
      "num_train": (1, "an integer >= 1"),
      "num_val": (1, "an integer >= 1"),
      "num_test": (1, "an integer >= 1"),
      "seed": (0, "an integer >= 0"),
    }
    for name, (low, expected) in bounds.items():
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name}={value!r}; expected {expected}")
      object.__setattr__(self, name, int(value))


@functools.lru_cache(maxsize=16384)
def file_split(file: str) -> str:
  """ "train", "val" or "test" for a page path such as ``text/shared/find_toolbar.html`` (fixed, seed-free)."""
  digest = hashlib.blake2b(file.encode("utf-8"), digest_size=8, person=HASH_PERSON).digest()
  bucket = int.from_bytes(digest, "little") % 1000
  return next(s for s, upper in zip(SPLITS, SPLIT_UPPER, strict=True) if bucket < upper)


def aligned_pairs(pair: tuple[str, str], min_chars: int) -> tuple[list[dict], dict]:
  """Steps 1-4 of the module doc: ``[{"id", "file", "split", "a", "b"}]`` and counts of what was dropped."""
  a_docs, b_docs = libreoffice.paragraphs(pair[0]), libreoffice.paragraphs(pair[1])
  common = sorted(a_docs.keys() & b_docs.keys())
  counts = {
    "paragraphs_a": len(a_docs),
    "paragraphs_b": len(b_docs),
    "aligned_ids": len(common),
    "dropped_short": 0,
    "dropped_identical": 0,
    "dropped_duplicate": 0,
  }
  seen_a, seen_b, pairs = set(), set(), []
  for i in common:
    a, b = a_docs[i]["text"], b_docs[i]["text"]
    if len(a) < min_chars or len(b) < min_chars:
      counts["dropped_short"] += 1
    elif a == b:
      counts["dropped_identical"] += 1
    elif a in seen_a or b in seen_b:
      counts["dropped_duplicate"] += 1
    else:
      seen_a.add(a)
      seen_b.add(b)
      file = a_docs[i]["file"]
      pairs.append({"id": i, "file": file, "split": file_split(file), "a": a, "b": b})
  return pairs, counts


def encode(tok, texts: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray, int]:
  """``[CLS] + pieces`` cut to max_len, 0-padded: tokens int32 [N, max_len], lengths int32 [N], #truncated."""
  tokens = np.zeros((len(texts), max_len), np.int32)
  lengths = np.zeros(len(texts), np.int32)
  truncated = 0
  for row, ids in enumerate(tok.encode_batch(texts)):
    ids = [tokenizer.CLS, *ids]
    truncated += len(ids) > max_len
    ids = ids[:max_len]
    tokens[row, : len(ids)] = ids
    lengths[row] = len(ids)
  return tokens, lengths, truncated


def sentencepiece(name: str, sentences: list[str], vocab_size: int) -> tokenizer.SentencePieceTokenizer:
  options = tokenizer.SentencePieceOptions(vocab_size=vocab_size)
  return tokenizer.cached_sentencepiece(name, lambda: sentences, options, corpora.data_dir() / "tokenizers")


def train_multilingual_tokenizer(
  langs: tuple[str, ...], vocab_size: int = 8000, *, per_lang: int = 20000, min_chars: int = 20
) -> tokenizer.SentencePieceTokenizer:
  """One sentencepiece model over several installed LibreOffice help languages at once.

  Text: the paragraphs present in every language of ``langs`` on train pages (:func:`file_split`, so the
  model never saw a val/test page of ``xling``) with at least ``min_chars`` characters in each language;
  the first ``per_lang`` ids in BLAKE2b-hash order (a fixed pseudo-random sample across pages); fed
  interleaved by id (lang0, lang1, … of id 0, then of id 1, …) with exact repeats removed. Cached under
  ``<data dir>/tokenizers/multilingual-<langs>-<hash>.model``.
  """
  langs = tuple(libreoffice.check_lang(lang) for lang in langs)
  if len(langs) < 1 or len(set(langs)) != len(langs):
    raise ValueError(f"langs={langs!r}; expected one or more distinct languages")
  if per_lang < 1:
    raise ValueError(f"per_lang={per_lang!r}; expected an integer >= 1")
  rows = [
    (i, texts)
    for i, texts in libreoffice.aligned(langs)
    if file_split(i.partition("#")[0]) == "train" and min(map(len, texts)) >= min_chars
  ]
  rows.sort(key=lambda r: hashlib.blake2b(r[0].encode(), digest_size=8, person=HASH_PERSON).digest())
  sentences = list(dict.fromkeys(itertools.chain.from_iterable(texts for _, texts in rows[:per_lang])))
  return sentencepiece(f"multilingual-{'-'.join(langs)}", sentences, vocab_size)


@functools.lru_cache(maxsize=8)
def examples(cfg: Config) -> tuple[dict[str, tuple[dict, ...]], dict]:
  """Steps 1-5: the chosen pairs per split (``{"id", "file", "split", "a", "b"}``, row order) and counts."""
  pairs, counts = aligned_pairs(cfg.pair, cfg.min_chars)
  wanted = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}
  rng = np.random.default_rng(cfg.seed)
  chosen = {}
  for split in SPLITS:
    pool = [p for p in pairs if p["split"] == split]
    if not pool:
      raise ValueError(f"xling {cfg.pair}: split {split!r} is empty after filtering (min_chars={cfg.min_chars})")
    chosen[split] = tuple(pool[k] for k in rng.permutation(len(pool))[: wanted[split]])
    counts[f"available_{split}"] = len(pool)
  return chosen, counts


def tokenizer_for(cfg: Config) -> tokenizer.SentencePieceTokenizer:
  """The task's sentencepiece model: both languages of the train pairs, interleaved a0, b0, a1, b1, …"""
  train = examples(cfg)[0]["train"]
  text = list(itertools.chain.from_iterable((p["a"], p["b"]) for p in train))
  return sentencepiece(f"xling-{cfg.pair[0]}-{cfg.pair[1]}", text, cfg.vocab_size)


@functools.lru_cache(maxsize=8)
def build(cfg: Config) -> Task:
  t0 = time.perf_counter()
  chosen, counts = examples(cfg)
  tok = tokenizer_for(cfg)
  splits, truncated = {}, 0
  for split, rows in chosen.items():
    tokens, lengths, cut_a = encode(tok, [p["a"] for p in rows], cfg.max_len)
    tokens_b, lengths_b, cut_b = encode(tok, [p["b"] for p in rows], cfg.max_len)
    truncated += cut_a + cut_b
    splits[split] = {"tokens": tokens, "lengths": lengths, "tokens_b": tokens_b, "lengths_b": lengths_b}
    for array in splits[split].values():
      array.setflags(write=False)
  card = {
    "source": [f"deb:libreoffice-help-{lang}" for lang in cfg.pair],
    "paths": "usr/share/libreoffice/help/<dir>/text/**/*.html (par_id/hd_id paragraphs)",
    "pair": cfg.pair,
    "classes": "none (kind match: row i of a is the translation of row i of b)",
    "counts": counts,
    "sizes": {split: len(rows) for split, rows in chosen.items()},
    "pages": {split: len({p["file"] for p in rows}) for split, rows in chosen.items()},
    "lengths_a": length_stats(splits["train"]["lengths"]),
    "lengths_b": length_stats(splits["train"]["lengths_b"]),
    "truncated_fraction": round(truncated / (2 * sum(len(r) for r in chosen.values())), 4),
    "tokenizer": {"vocab_size": tok.vocab_size, "requested": cfg.vocab_size, "sentences": 2 * len(chosen["train"])},
    "baseline_note": "0.0: no majority class; chance top-1 retrieval is 1/B for an eval batch of B pairs",
    "build_seconds": round(time.perf_counter() - t0, 2),
  }
  return Task("xling", "match", splits, tok.vocab_size, cfg.max_len, 0, 0.0, card, tokenizer=tok)
