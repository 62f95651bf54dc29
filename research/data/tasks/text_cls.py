"""Byte-level long-document classification (the LRA-Text analogue): kernel document -> top-level directory.

Reference: Y. Tay et al. "Long Range Arena: A Benchmark for Efficient Transformers." ICLR 2021.
arXiv:2011.04006 (its Text task: IMDb reviews as bytes, 4K tokens). Here the documents are the Linux
kernel's ``Documentation/**/*.rst`` (corpus ``linux-doc``, Debian ``linux-doc-6.1``).

Classes. The top-level directories with at least ``min_docs`` documents, ``translations/`` (other
languages, not a topic) and the root files (``"."``) excluded, in sorted order. With ``min_docs=50`` on
linux-doc-6.1 6.1.176-1 these are 9 directories (not 10: the tenth with >= 50 documents is translations/).

Label stripping. A document often names its own directory; every document (whatever its class) loses, in
this order, the strings that could name a class:

1. every ``.. toctree::`` directive block (its entries are document paths, relative to the directory);
2. every ``:doc:`` and ``:ref:`` role, whole (targets are document paths and labels);
3. every path-like run (characters ``[A-Za-z0-9_.~+*-]`` around at least one ``/``: file paths, URLs
   after the scheme) that contains a class name in the sense of 4;
4. every class name as a word, case-insensitively: not preceded or followed by an ASCII letter, with the
   name's ``-`` also matching ``_`` or a space (``Admin Guide``, ``hwmon_device_register`` -> ``_device...``,
   ``arm64`` -> ``64``; ``alarm``, ``virtual``, ``ARMv7`` are kept).

Rules 3-4 repeat until nothing changes (a removal can join two halves into a name). The stripped text is
UTF-8 encoded and cut to ``max_bytes`` bytes, and rules 3-4 run again on the bytes (the cut can turn
``ARMv7`` into ``ARM``). Singular or related words
(``filesystem``, ``network``) are topic content, not the class name, and stay.

Input. ``[CLS]`` (id 2) then the bytes (``5 + byte``, :class:`research.data.tokenizer.ByteTokenizer`),
padded with 0: ``seq_len = max_bytes + 1``. Documents whose stripped text is empty are dropped; of
documents with byte-identical inputs only the first by id is kept (no duplicate across splits).

Splits, by document, stratified: within each class the documents are ordered by a BLAKE2b hash of
``(seed, id)``; the first ``round(n * test_fraction)`` go to "test", the next ``round(n * val_fraction)``
to "val", the rest to "train". Deterministic in (corpus, config). Baseline: accuracy on test of the class
most frequent in train.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import string
import time
from typing import AnyStr

import numpy as np

from research.data import corpora
from research.data.corpora.linux_doc import DOC_ROLE, REF_ROLE
from research.data.tasks.base import SPLITS, Task, length_stats
from research.data.tokenizer import CLS, ByteTokenizer

CORPUS = "linux-doc"
EXCLUDED_DIRS = (".", "translations")
TOCTREE = re.compile(r"^([ \t]*)\.\. toctree::.*\n(?:(?:\1[ \t]+\S.*|[ \t]*)(?:\n|$))*", re.M)
_LETTERS = string.ascii_lowercase
_PATH_CHARS = string.ascii_lowercase + string.digits + "_.~+*-/"
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@dataclasses.dataclass(frozen=True)
class Config:
  min_docs: int = 50  # a top-level directory with at least this many documents is a class
  max_bytes: int = 4096  # bytes kept per document (LRA-Text: 4K)
  seed: int = 0
  val_fraction: float = 0.1
  test_fraction: float = 0.1

  def __post_init__(self):
    for name, low in (("min_docs", 2), ("max_bytes", 1), ("seed", 0)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"text_cls Config.{name}={value!r}; expected an integer >= {low}")
    for name in ("val_fraction", "test_fraction"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 0.5:
        raise ValueError(f"text_cls Config.{name}={value!r}; expected a number in (0, 0.5)")


def name_variants(names: tuple[str, ...]) -> tuple[str, ...]:
  """Lowercase spellings of the class names: each ``-`` as ``-``, ``_`` or a space."""
  out = set()
  for name in names:
    spellings = [""]
    for i, part in enumerate(name.lower().split("-")):
      spellings = [s + sep + part for s in spellings for sep in (("",) if i == 0 else ("-", "_", " "))]
    out.update(spellings)
  return tuple(sorted(out, key=lambda v: (-len(v), v)))


def strip_names(data: AnyStr, names: tuple[str, ...]) -> AnyStr:
  """Rules 3 and 4 on text or bytes, repeated until nothing changes (ASCII case-insensitive). Plain
  ``find`` over lowercased text: a case-insensitive regex alternation with look-arounds took seconds here."""
  is_bytes = isinstance(data, bytes)
  variants = [v.encode() if is_bytes else v for v in name_variants(names)]
  letters, path_chars, slash = (
    (_LETTERS, _PATH_CHARS, "/") if not is_bytes else (_LETTERS.encode(), _PATH_CHARS.encode(), b"/")
  )
  while True:
    low = data.lower() if is_bytes else data.translate(_ASCII_LOWER)  # same length as data
    cuts = []
    for v in variants:
      i = low.find(v)
      while i >= 0:
        j = i + len(v)
        if not (i > 0 and low[i - 1 : i] in letters) and not (j < len(low) and low[j : j + 1] in letters):
          run_i, run_j = i, j
          while run_i > 0 and low[run_i - 1 : run_i] in path_chars:
            run_i -= 1
          while run_j < len(low) and low[run_j : run_j + 1] in path_chars:
            run_j += 1
          cuts.append((run_i, run_j) if slash in low[run_i:run_j] else (i, j))
        i = low.find(v, j)
    if not cuts:
      return data
    pieces, end = [], 0
    for i, j in sorted(cuts):
      pieces.append(data[end : max(i, end)])
      end = max(end, j)
    data = data[:0].join([*pieces, data[end:]])


def strip_labels(text: str, names: tuple[str, ...]) -> str:
  """Rules 1-4 of the module docstring on one document."""
  return strip_names(REF_ROLE.sub("", DOC_ROLE.sub("", TOCTREE.sub("", text))), names)


def encode(text: str, names: tuple[str, ...], max_bytes: int) -> bytes:
  """The bytes a document contributes: stripped, UTF-8, cut to max_bytes, rules 3-4 again on the bytes."""
  return strip_names(strip_labels(text, names).encode("utf-8")[:max_bytes], names)


def classes(docs: list[dict], min_docs: int) -> tuple[str, ...]:
  counts: dict[str, int] = {}
  for doc in docs:
    counts[doc["dir"]] = counts.get(doc["dir"], 0) + 1
  return tuple(sorted(d for d, n in counts.items() if n >= min_docs and d not in EXCLUDED_DIRS))


def _order(seed: int, doc_id: str) -> bytes:
  return hashlib.blake2b(f"{seed}\0{doc_id}".encode(), digest_size=8, person=b"text-cls-v1").digest()


@functools.lru_cache(maxsize=2)
def encoded(min_docs: int, max_bytes: int) -> tuple[tuple[str, ...], tuple[tuple[str, int, bytes], ...], dict]:
  """(class names, every kept (doc id, class, input bytes) sorted by id, facts about the documents)."""
  docs = corpora.read(CORPUS)
  names = classes(docs, min_docs)
  if len(names) < 2:
    raise ValueError(
      f"text_cls Config.min_docs={min_docs} leaves {len(names)} class(es) in {CORPUS}; "
      f"expected a value that keeps at least 2 top-level directories"
    )
  index = {name: i for i, name in enumerate(names)}
  seen: set[bytes] = set()
  rows, raw_bytes = [], []
  empty = duplicate = 0
  for doc in sorted((d for d in docs if d["dir"] in index), key=lambda d: d["id"]):
    raw_bytes.append(len(doc["text"].encode("utf-8")))
    data = encode(doc["text"], names, max_bytes)
    if not data.strip():
      empty += 1
    elif data in seen:
      duplicate += 1
    else:
      seen.add(data)
      rows.append((doc["id"], index[doc["dir"]], data))
  return names, tuple(rows), {"empty": empty, "duplicate": duplicate, "raw_bytes": tuple(raw_bytes)}


@functools.lru_cache(maxsize=4)
def examples(cfg: Config) -> tuple[tuple[str, ...], dict[str, list[tuple[str, int, bytes]]], dict]:
  """(class names, {split: [(doc id, class, input bytes)] sorted by id}, facts about the documents)."""
  names, rows, facts = encoded(cfg.min_docs, cfg.max_bytes)
  splits: dict[str, list[tuple[str, int, bytes]]] = {s: [] for s in SPLITS}
  for c in range(len(names)):
    members = sorted((r for r in rows if r[1] == c), key=lambda r: _order(cfg.seed, r[0]))
    n_test, n_val = round(len(members) * cfg.test_fraction), round(len(members) * cfg.val_fraction)
    splits["test"] += members[:n_test]
    splits["val"] += members[n_test : n_test + n_val]
    splits["train"] += members[n_test + n_val :]
  return names, {s: sorted(members) for s, members in splits.items()}, facts


def to_tokens(rows: list[bytes], max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
  """[CLS] + 5 + byte, zero-padded -> (tokens int32 [N, max_bytes + 1], lengths int32 [N])."""
  tokens = np.zeros((len(rows), max_bytes + 1), np.int32)
  tokens[:, 0] = CLS
  lengths = np.empty(len(rows), np.int32)
  for i, data in enumerate(rows):
    tokens[i, 1 : 1 + len(data)] = np.frombuffer(data, np.uint8).astype(np.int32) + ByteTokenizer.offset
    lengths[i] = 1 + len(data)
  return tokens, lengths


@functools.lru_cache(maxsize=4)
def build(cfg: Config) -> Task:
  """The text_cls task for `cfg` (memoised; arrays read-only)."""
  start = time.perf_counter()
  names, rows, facts = examples(cfg)
  splits = {}
  for split in SPLITS:
    tokens, lengths = to_tokens([r[2] for r in rows[split]], cfg.max_bytes)
    arrays = {"tokens": tokens, "lengths": lengths, "targets": np.asarray([r[1] for r in rows[split]], np.int32)}
    for a in arrays.values():
      a.setflags(write=False)
    splits[split] = arrays
  majority_class = int(np.bincount(splits["train"]["targets"], minlength=len(names)).argmax())
  baseline = float(np.mean(splits["test"]["targets"] == majority_class))
  card = {
    "source": f"corpus {CORPUS} (Debian linux-doc-6.1, usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz)",
    "input": f"[CLS] + first {cfg.max_bytes} UTF-8 bytes (ids 5 + byte) after label stripping, 0-padded",
    "classes": {name: {s: int(np.sum(splits[s]["targets"] == i)) for s in SPLITS} for i, name in enumerate(names)},
    "sizes": {s: len(rows[s]) for s in SPLITS},
    "class_balance_train": {
      name: round(float(np.mean(splits["train"]["targets"] == i)), 4) for i, name in enumerate(names)
    },
    "dropped": {"empty": facts["empty"], "duplicate": facts["duplicate"]},
    "document_bytes_before_cut": length_stats(np.asarray(facts["raw_bytes"])),
    "lengths": length_stats(splits["train"]["lengths"]),
    "truncated_fraction_train": round(float(np.mean(splits["train"]["lengths"] == cfg.max_bytes + 1)), 4),
    "baseline": f"accuracy on test of the train majority class {names[majority_class]!r}",
    "build_seconds": round(time.perf_counter() - start, 3),
  }
  return Task(
    "text_cls",
    "classify",
    splits,
    ByteTokenizer.vocab_size,
    cfg.max_bytes + 1,
    len(names),
    baseline,
    card,
    tokenizer=ByteTokenizer(),
  )
