"""Byte-level document matching (the LRA-Retrieval analogue): are two kernel documents linked?

Reference: Y. Tay et al. "Long Range Arena: A Benchmark for Efficient Transformers." ICLR 2021.
arXiv:2011.04006 (its Retrieval task: ACL Anthology citation links, two 4K-byte documents, a dual
encoder). Here the documents are the Linux kernel's ``Documentation/**/*.rst`` (corpus ``linux-doc``).

Positives: unordered pairs of distinct documents where one cites the other by a ``:doc:`` role or a
written-out ``Documentation/<path>.rst`` (with ``include_ref``, also by a ``:ref:`` role to a label the
other defines); links to missing documents are dropped; see :func:`research.data.corpora.linux_doc.links`.
On linux-doc-6.1 6.1.176-1: 1,251 pairs, 2,192 with ``:ref:`` (941 more), over all documents, the
translations included (a translation cites its original). The issue's 1,240 misses 11 path mentions
directly followed by CJK text, where a Unicode ``\b`` finds no word boundary (the pattern is ASCII here).

Link removal: every document, linked or not, loses every ``:doc:`` and ``:ref:`` role, every
``Documentation/<path>.rst`` mention and every label definition ``.. _label:`` (repeated until none is
left), so no input shows a linking string and linked and unlinked documents are edited alike.
Input: ``[CLS]`` (id 2) + the first ``max_bytes`` bytes (ids ``5 + byte``), 0-padded, for each side.

Splits, by document (no document in two splits). ``split_unit="component"`` (default): the connected
components of the link graph in a seeded order fill "test" and then "val" while a component fits in the
remaining ``test_fraction`` / ``val_fraction`` of the positive pairs; every other component is "train".
No pair is lost, but the largest component (498 documents, 833 of the 1,251 pairs) is always in train,
so val and test are made of smaller clusters (a driver and its subsystem page, a translation family).
``split_unit="document"``: each document goes to a split by a BLAKE2b hash of ``(seed, id)`` and pairs
across splits are dropped: at 80/10/10 (seed 0) 795/14/14 of the 1,251 pairs survive, hence the default.

Negatives, per split, one per positive: for a positive (a, b) keep one of a, b (a fair coin) and draw a
partner among the endpoints of the split's positives (so a document appears in as many negatives as
positives on average, and "is this document ever linked" is no cue) that is not linked to it by any
kind of link (``:ref:`` included even without ``include_ref``) and not already paired with it. Each
example's two sides are swapped by a fair coin and the examples are shuffled, all from the seed.
Targets: 1 linked, 0 not; every split is exactly balanced, so the majority baseline is 0.5.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time

import numpy as np

from research.data import corpora
from research.data.corpora.linux_doc import DOC_ROLE, LABEL_DEF, PATH_MENTION, REF_ROLE, labels, links
from research.data.tasks.base import SPLITS, Task, length_stats
from research.data.tasks.text_cls import to_tokens
from research.data.tokenizer import ByteTokenizer

CORPUS = "linux-doc"
SPLIT_UNITS = ("component", "document")
_STREAM_TAG = 0x5265_7472  # "Retr": this task's random streams differ from other tasks'


@dataclasses.dataclass(frozen=True)
class Config:
  max_bytes: int = 4096  # bytes kept per document (LRA-Retrieval: 4K)
  include_ref: bool = False  # also link documents by :ref: roles (about 940 more pairs)
  seed: int = 0
  val_fraction: float = 0.1  # of the positive pairs ("component") or of the documents ("document")
  test_fraction: float = 0.1
  split_unit: str = "component"

  def __post_init__(self):
    for name, low in (("max_bytes", 1), ("seed", 0)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"retrieval Config.{name}={value!r}; expected an integer >= {low}")
    if not isinstance(self.include_ref, bool):
      raise ValueError(f"retrieval Config.include_ref={self.include_ref!r}; expected True or False")
    for name in ("val_fraction", "test_fraction"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 0.5:
        raise ValueError(f"retrieval Config.{name}={value!r}; expected a number in (0, 0.5)")
    if self.split_unit not in SPLIT_UNITS:
      raise ValueError(f"retrieval Config.split_unit={self.split_unit!r}; expected one of {', '.join(SPLIT_UNITS)}")


def strip_links(text: str) -> str:
  """Remove every linking string (roles, Documentation/...rst mentions, label definitions) until none is left."""
  while True:
    stripped = LABEL_DEF.sub("", PATH_MENTION.sub("", REF_ROLE.sub("", DOC_ROLE.sub("", text))))
    if stripped == text:
      return text
    text = stripped


def _hash(seed: int, key: str) -> int:
  return int.from_bytes(
    hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8, person=b"retrieval-v1").digest(), "little"
  )


def components(pairs: list[tuple[str, str]]) -> list[list[str]]:
  """Connected components of the link graph (union-find), each sorted, ordered by their first id."""
  parent: dict[str, str] = {}

  def root(x: str) -> str:
    while parent.setdefault(x, x) != x:
      parent[x] = parent[parent[x]]
      x = parent[x]
    return x

  for a, b in pairs:
    parent[root(a)] = root(b)
  groups: dict[str, list[str]] = {}
  for x in sorted(parent):
    groups.setdefault(root(x), []).append(x)
  return sorted(groups.values())


def assign(pairs: list[tuple[str, str]], cfg: Config) -> dict[str, str]:
  """Document id -> split, for the documents of `pairs` (see the module docstring)."""
  if cfg.split_unit == "document":
    docs = sorted({d for p in pairs for d in p})
    u = {d: _hash(cfg.seed, d) / 2**64 for d in docs}
    return {
      d: "test" if u[d] < cfg.test_fraction else "val" if u[d] < cfg.test_fraction + cfg.val_fraction else "train"
      for d in docs
    }
  size: dict[str, int] = {}
  comps = components(pairs)
  first = {d: comp[0] for comp in comps for d in comp}
  for a, _ in pairs:
    size[first[a]] = size.get(first[a], 0) + 1
  room = {"test": round(cfg.test_fraction * len(pairs)), "val": round(cfg.val_fraction * len(pairs))}
  out = {}
  for comp in sorted(comps, key=lambda c: _hash(cfg.seed, c[0])):
    split = next((s for s in ("test", "val") if size[comp[0]] <= room[s]), "train")
    if split != "train":
      room[split] -= size[comp[0]]
    out.update(dict.fromkeys(comp, split))
  return out


def _negatives(
  positives: list[tuple[str, str]], linked: frozenset[tuple[str, str]], rng: np.random.Generator
) -> list[tuple[str, str]]:
  ends = [d for p in positives for d in p]
  taken: set[tuple[str, str]] = set()
  out = []
  for pair in positives:
    keep = pair[int(rng.integers(2))]
    for _ in range(1000):
      other = ends[int(rng.integers(len(ends)))]
      key = (min(keep, other), max(keep, other))
      if other != keep and key not in linked and key not in taken:
        break
    else:
      raise ValueError(f"retrieval: no unlinked partner for {keep!r} among {len(set(ends))} documents of its split")
    taken.add(key)
    out.append(key)
  return out


@functools.lru_cache(maxsize=2)
def graph(include_ref: bool) -> tuple[tuple[tuple[str, str], ...], frozenset[tuple[str, str]], dict[str, str]]:
  """(the positive pairs sorted, every linked pair of any kind, {linked doc id: text after link removal})."""
  docs = corpora.read(CORPUS)
  ids = frozenset(d["id"] for d in docs)
  owner = labels(docs)
  linked = frozenset((min(d["id"], t), max(d["id"], t)) for d in docs for t in links(d, ids, owner))
  pairs = tuple(
    sorted({(min(d["id"], t), max(d["id"], t)) for d in docs for t in links(d, ids, owner if include_ref else None)})
  )
  ends = {x for p in pairs for x in p}
  return pairs, linked, {d["id"]: strip_links(d["text"]) for d in docs if d["id"] in ends}


@functools.lru_cache(maxsize=4)
def examples(cfg: Config) -> tuple[dict[str, list[tuple[str, str, int]]], dict[str, str], dict]:
  """({split: [(doc a, doc b, target)]} in example order, {doc id: text after link removal}, card facts)."""
  pairs, linked, texts = graph(cfg.include_ref)
  split_of = assign(list(pairs), cfg)
  out = {}
  for index, split in enumerate(SPLITS):
    rng = np.random.default_rng([_STREAM_TAG, cfg.seed, index])
    positives = [p for p in pairs if split_of[p[0]] == split_of[p[1]] == split]
    rows = [(*p, 1) for p in positives] + [(*p, 0) for p in _negatives(positives, linked, rng)] if positives else []
    rows = [(b, a, t) if rng.integers(2) else (a, b, t) for a, b, t in rows]
    out[split] = [rows[i] for i in rng.permutation(len(rows))]
  comps = components(list(pairs))
  facts = {
    "pairs": len(pairs),
    "pairs_lost_across_splits": len(pairs) - sum(t for rows in out.values() for *_, t in rows),
    "linked_documents": len(split_of),
    "components": len(comps),
    "largest_component_documents": max(map(len, comps)),
    "documents": {s: len({d for a, b, _ in out[s] for d in (a, b)}) for s in SPLITS},
  }
  return out, texts, facts


@functools.lru_cache(maxsize=4)
def build(cfg: Config) -> Task:
  """The retrieval task for `cfg` (memoised; arrays read-only)."""
  start = time.perf_counter()
  rows, texts, facts = examples(cfg)
  used = {d for split_rows in rows.values() for a, b, _ in split_rows for d in (a, b)}
  data = {d: texts[d].encode("utf-8")[: cfg.max_bytes] for d in sorted(used)}
  splits = {}
  for split in SPLITS:
    tokens, lengths = to_tokens([data[a] for a, _, _ in rows[split]], cfg.max_bytes)
    tokens_b, lengths_b = to_tokens([data[b] for _, b, _ in rows[split]], cfg.max_bytes)
    arrays = {
      "tokens": tokens,
      "lengths": lengths,
      "tokens_b": tokens_b,
      "lengths_b": lengths_b,
      "targets": np.asarray([t for *_, t in rows[split]], np.int32),
    }
    for a in arrays.values():
      a.setflags(write=False)
    splits[split] = arrays
  test = splits["test"]["targets"]
  baseline = float(max(np.mean(test), 1 - np.mean(test))) if len(test) else 0.5
  raw = np.asarray([len(texts[d].encode("utf-8")) for d in sorted(used)] or [0])
  card = {
    "source": f"corpus {CORPUS} (Debian linux-doc-6.1, usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz)",
    "links": ":doc: roles and Documentation/...rst mentions" + (" and :ref: roles" if cfg.include_ref else ""),
    "input": f"[CLS] + first {cfg.max_bytes} UTF-8 bytes of each document after link removal, 0-padded",
    "split_unit": cfg.split_unit,
    **facts,
    "sizes": {s: len(rows[s]) for s in SPLITS},
    "positives": {s: int(splits[s]["targets"].sum()) for s in SPLITS},
    "classes": {"0": "not linked", "1": "linked"},
    "document_bytes_before_cut": length_stats(raw),
    "lengths": length_stats(np.concatenate([splits["train"]["lengths"], splits["train"]["lengths_b"]])),
    "baseline": "majority class accuracy on test (balanced: 0.5)",
    "build_seconds": round(time.perf_counter() - start, 3),
  }
  return Task(
    "retrieval",
    "pair",
    splits,
    ByteTokenizer.vocab_size,
    cfg.max_bytes + 1,
    2,
    baseline,
    card,
    tokenizer=ByteTokenizer(),
  )
