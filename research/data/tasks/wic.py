"""``wic``: word-in-context polysemy from WordNet example sentences (kind ``classify``, 2 classes).

Reference: M. T. Pilehvar and J. Camacho-Collados. "WiC: the Word-in-Context Dataset for Evaluating
Context-Sensitive Meaning Representations." NAACL 2019. arXiv:1808.09121. Built here from the ``wordnet``
corpus (Debian ``wordnet-base``, ``usr/share/wordnet/data.*``; see research/data/corpora/wordnet.py).

Example: two example sentences that both contain the same lemma (same part of speech); label 1 if they
are examples of the same synset, 0 if of two different synsets of that lemma. One row holds
``[CLS] s1 [SEP] s2``, sentencepiece ids, padded with 0 to ``max_len``; when too long, the longer sentence
loses tokens from its end first (the card counts truncated rows).

Lemma matching. Sentences and lemmas are lowercased and cut into ``[a-z0-9]+`` words (so ``dog's`` ->
``dog s`` and ``well-known`` -> ``well known``). A lemma of words ``w1..wk`` occurs in a sentence when the
sentence has k consecutive words equal to them, except that the head word (``w1`` for verbs, ``wk``
otherwise) may be any form in :func:`forms`: regular inflections only (nouns -s/-es/-ies; verbs
-s/-es/-ies, -ed/-d/-ied, -ing with e-drop, doubled final consonant; adjectives and adverbs -er/-est, -r/-st,
-ier/-iest, doubled consonant). Irregular forms (``ran``, ``mice``) do not match; an example sentence that
does not contain a lemma is not used for that lemma. Lemmas group case-insensitively by (lemma, pos).

Pairs. Per (lemma, pos) group, candidate positives are two distinct sentences of one synset, candidate
negatives two distinct sentences of different synsets. A group contributes ``k = min(#positives,
#negatives, max_pairs_per_lemma // 2)`` of each, drawn without replacement by an rng seeded with (seed,
lemma, pos), sentence order randomised; so every split is exactly balanced and no lemma has a label prior.

Splits are by lemma: a personalised BLAKE2b hash of (seed, casefolded lemma) picks one of 1000 buckets,
80% train, 10% val, 10% test. All parts of speech of a lemma share its split, so test lemmas never occur
as a pair lemma in train (a sentence may still occur in train under another lemma it contains; the card
counts the val/test pairs that have such a sentence: 0 and 1 with the defaults). The sentencepiece
tokenizer is trained on the train split's sentences only (first-appearance order), cached under
``<data dir>/tokenizers``; val/test sentences therefore split into somewhat more pieces.

Measured on wordnet-base 1:3.0-37: 10,355 (lemma, pos) groups have examples in >= 2 synsets (the issue's
"about 10,000"); 6,847 still do once the lemma must occur in the sentence, and 2,579 of those also have a
positive pair. Defaults give 5,158 pairs: train 4,136 / val 504 / test 518 from 1,937 / 244 / 244 lemmas,
53% of them adjective pairs (adjectives have the most examples).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import re

import numpy as np

from research.data import corpora, tokenizer
from research.data.tasks.base import SPLITS, Task, length_stats

CORPUS = "wordnet"
NUM_BUCKETS = 1000
BUCKET_UPPER = (800, 900, 1000)  # train, val, test
_PERSON = b"research-wic-v1"
_WORD = re.compile(r"[a-z0-9]+")
_VOWELS = "aeiou"


@dataclasses.dataclass(frozen=True)
class Config:
  vocab_size: int = 4000  # sentencepiece vocabulary, trained on train sentences
  max_len: int = 64  # tokens per row: [CLS] s1 [SEP] s2, padded
  max_pairs_per_lemma: int = 2  # positives + negatives per (lemma, pos); even
  seed: int = 0  # split hash and pair sampling

  def __post_init__(self):
    checks = {
      "vocab_size": (self.vocab_size, 64, "an integer >= 64"),
      "max_len": (self.max_len, 8, "an integer >= 8"),
      "max_pairs_per_lemma": (self.max_pairs_per_lemma, 2, "an even integer >= 2"),
      "seed": (self.seed, 0, "an integer >= 0"),
    }
    for name, (value, low, expected) in checks.items():
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"wic Config.{name}={value!r}; expected {expected}")
    if self.max_pairs_per_lemma % 2:
      raise ValueError(f"wic Config.max_pairs_per_lemma={self.max_pairs_per_lemma!r}; expected an even integer >= 2")


@dataclasses.dataclass(frozen=True)
class Pair:
  lemma: str  # casefolded
  pos: str  # n v a r
  sentence_a: str
  sentence_b: str
  synset_a: str  # wordnet corpus id, e.g. "n:00001740"
  synset_b: str
  label: int  # 1 = same synset


# ---------------------------------------------------------------------------------------------- matching
def words(text: str) -> list[str]:
  return _WORD.findall(text.lower())


@functools.cache
def forms(word: str, pos: str) -> frozenset[str]:
  """The word and its regular inflections for a part of speech (see the module docstring)."""
  out = {word}
  consonant_y = len(word) >= 2 and word[-1] == "y" and word[-2] not in _VOWELS
  cvc = len(word) >= 3 and word[-1] not in _VOWELS + "wxy" and word[-2] in _VOWELS and word[-3] not in _VOWELS
  if pos in ("n", "v"):
    out |= {word + "s", word + "es"} | ({word[:-1] + "ies"} if consonant_y else set())
  if pos == "v":
    out |= {word + "ed", word + "ing"}
    out |= {word + "d", word[:-1] + "ing"} if word.endswith("e") else set()
    out |= {word[:-1] + "ied"} if consonant_y else set()
    out |= {word + word[-1] + "ed", word + word[-1] + "ing"} if cvc else set()
  if pos in ("a", "r"):
    out |= {word + "er", word + "est"}
    out |= {word + "r", word + "st"} if word.endswith("e") else set()
    out |= {word[:-1] + "ier", word[:-1] + "iest"} if consonant_y else set()
    out |= {word + word[-1] + "er", word + word[-1] + "est"} if cvc else set()
  return frozenset(out)


def contains(lemma: str, pos: str, sentence_words: list[str]) -> bool:
  """Whether the lemma (or an inflection of its head word) occurs in the sentence's words."""
  lemma_words = words(lemma)
  if not lemma_words:
    return False
  k = len(lemma_words)
  head = 0 if pos == "v" else k - 1
  head_forms = forms(lemma_words[head], pos)
  for i in range(len(sentence_words) - k + 1):
    if sentence_words[i + head] in head_forms and all(
      sentence_words[i + j] == lemma_words[j] for j in range(k) if j != head
    ):
      return True
  return False


# ------------------------------------------------------------------------------------------------ pairs
def split_of(lemma: str, seed: int) -> str:
  """train/val/test of a (casefolded) lemma: 80/10/10 by a seeded hash bucket."""
  digest = hashlib.blake2b(f"{seed}\0{lemma}".encode(), digest_size=8, person=_PERSON).digest()
  bucket = int.from_bytes(digest, "little") % NUM_BUCKETS
  return next(s for s, upper in zip(SPLITS, BUCKET_UPPER, strict=True) if bucket < upper)


@functools.lru_cache(maxsize=1)
def synsets_with_examples() -> tuple[dict, ...]:
  """Like ``corpora.read("wordnet")`` minus synsets without examples, whose JSON parse it skips (72% of lines)."""
  path = corpora.require(CORPUS) / "documents.jsonl"
  with path.open(encoding="utf-8") as f:
    return tuple(d for d in (json.loads(line) for line in f if '"examples": []' not in line) if d["examples"])


@functools.lru_cache(maxsize=1)
def groups() -> dict[tuple[str, str], tuple[tuple[str, str], ...]]:
  """(lemma, pos) -> ((synset id, sentence), ...) for groups whose matched sentences span >= 2 synsets."""
  docs = synsets_with_examples()
  synsets = collections.defaultdict(set)
  for d in docs:
    for lemma in d["lemmas"]:
      synsets[lemma.casefold(), d["pos"]].add(d["id"])
  out = collections.defaultdict(dict)  # dict as an ordered set of (synset, sentence)
  for d in docs:
    tokenized = [(e, words(e)) for e in d["examples"]]
    for lemma in dict.fromkeys(lemma.casefold() for lemma in d["lemmas"]):
      key = (lemma, d["pos"])
      if len(synsets[key]) < 2:
        continue
      for sentence, sentence_words in tokenized:
        if contains(lemma, d["pos"], sentence_words):
          out[key][d["id"], sentence] = None
  return {k: tuple(v) for k, v in sorted(out.items()) if len({s for s, _ in v}) >= 2}


def _lemma_pairs(key: tuple[str, str], items: tuple[tuple[str, str], ...], cfg: Config) -> list[Pair]:
  n = len(items)
  positives = [
    (i, j) for i in range(n) for j in range(i + 1, n) if items[i][0] == items[j][0] and items[i][1] != items[j][1]
  ]
  if not positives:
    return []
  negatives = [
    (i, j) for i in range(n) for j in range(i + 1, n) if items[i][0] != items[j][0] and items[i][1] != items[j][1]
  ]
  candidates = (negatives, positives)
  k = min(len(negatives), len(positives), cfg.max_pairs_per_lemma // 2)
  if not k:
    return []
  digest = hashlib.blake2b(f"{key[0]}\0{key[1]}".encode(), digest_size=8, person=_PERSON).digest()
  rng = np.random.default_rng([cfg.seed, int.from_bytes(digest, "little")])
  pairs = []
  for label in (1, 0):
    for c in rng.choice(len(candidates[label]), size=k, replace=False):
      i, j = candidates[label][c]
      if rng.random() < 0.5:
        i, j = j, i
      pairs.append(Pair(key[0], key[1], items[i][1], items[j][1], items[i][0], items[j][0], label))
  return pairs


@functools.lru_cache(maxsize=8)
def pairs(cfg: Config) -> dict[str, tuple[Pair, ...]]:
  """The pairs of each split, in (lemma, pos) order; row i of split s in :func:`build` is ``pairs(cfg)[s][i]``."""
  out = {s: [] for s in SPLITS}
  for key, items in groups().items():
    out[split_of(key[0], cfg.seed)].extend(_lemma_pairs(key, items, cfg))
  return {s: tuple(p) for s, p in out.items()}


def train_sentences(cfg: Config) -> list[str]:
  return list(dict.fromkeys(s for p in pairs(cfg)["train"] for s in (p.sentence_a, p.sentence_b)))


@functools.lru_cache(maxsize=8)
def sentencepiece(cfg: Config) -> tokenizer.SentencePieceTokenizer:
  """The task's tokenizer: trained on train sentences only, cached on disk."""
  options = tokenizer.SentencePieceOptions(vocab_size=cfg.vocab_size)
  return tokenizer.cached_sentencepiece("wic", lambda: train_sentences(cfg), options, corpora.data_dir() / "tokenizers")


# ------------------------------------------------------------------------------------------------ rows
def encode_pair(a: list[int], b: list[int], max_len: int) -> list[int]:
  """[CLS] a [SEP] b, truncating the longer of a, b from its end until it fits in max_len."""
  a, b = list(a), list(b)
  while len(a) + len(b) + 2 > max_len:
    (a if len(a) >= len(b) else b).pop()
  return [tokenizer.CLS, *a, tokenizer.SEP, *b]


def _arrays(split_pairs: tuple[Pair, ...], tok, max_len: int) -> tuple[dict[str, np.ndarray], int, np.ndarray]:
  a = tok.encode_batch([p.sentence_a for p in split_pairs])
  b = tok.encode_batch([p.sentence_b for p in split_pairs])
  full = np.array([len(x) + len(y) + 2 for x, y in zip(a, b, strict=True)], np.int32)
  tokens = np.zeros((len(split_pairs), max_len), np.int32)
  lengths = np.zeros(len(split_pairs), np.int32)
  for i, (x, y) in enumerate(zip(a, b, strict=True)):
    row = encode_pair(x, y, max_len)
    tokens[i, : len(row)] = row
    lengths[i] = len(row)
  arrays = {"tokens": tokens, "lengths": lengths, "targets": np.array([p.label for p in split_pairs], np.int32)}
  for v in arrays.values():
    v.setflags(write=False)
  return arrays, int((full > max_len).sum()), full


@functools.lru_cache(maxsize=8)
def build(cfg: Config) -> Task:
  split_pairs = pairs(cfg)
  if not all(split_pairs.values()):
    raise ValueError(f"wic: an empty split with {cfg} ({ {s: len(p) for s, p in split_pairs.items()} })")
  tok = sentencepiece(cfg)
  splits, truncated, full = {}, {}, {}
  for s in SPLITS:
    splits[s], truncated[s], full[s] = _arrays(split_pairs[s], tok, cfg.max_len)
  train_sents = set(train_sentences(cfg))
  card = {
    "source": "Debian wordnet-base 1:3.0-37, usr/share/wordnet/data.{noun,verb,adj,adv} (corpus 'wordnet')",
    "unit": "(lemma, pos); splits by seeded hash of the casefolded lemma (80/10/10 buckets)",
    "groups_with_pairs": len(groups()),
    "lemmas": {s: len({p.lemma for p in split_pairs[s]}) for s in SPLITS},
    "sizes": {s: len(split_pairs[s]) for s in SPLITS},
    "pos": {s: dict(collections.Counter(p.pos for p in split_pairs[s])) for s in SPLITS},
    "classes": {"0": "different synsets", "1": "same synset"},
    "balance": {s: float(splits[s]["targets"].mean()) for s in SPLITS},
    "tokenizer": f"sentencepiece unigram, vocab {tok.vocab_size}, trained on {len(train_sents)} train sentences",
    "lengths": {s: length_stats(full[s]) for s in SPLITS},  # before truncation, incl. [CLS] and [SEP]
    "truncated": truncated,
    "pairs_with_a_train_sentence": {
      s: sum(p.sentence_a in train_sents or p.sentence_b in train_sents for p in split_pairs[s])
      for s in ("val", "test")
    },
    "baseline": "majority class on test (splits are exactly balanced: 0.5)",
  }
  majority_class = int(np.bincount(splits["train"]["targets"], minlength=2).argmax())
  baseline = float((splits["test"]["targets"] == majority_class).mean())
  return Task("wic", "classify", splits, tok.vocab_size, cfg.max_len, 2, baseline, card, tokenizer=tok)
