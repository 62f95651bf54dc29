"""The `wordnet` corpus (research/data/corpora/wordnet.py) and the `wic` task (research/data/tasks/wic.py)."""

from __future__ import annotations

import collections
import dataclasses
import re

import numpy as np
import pytest

from research.data import corpora, tasks, tokenizer
from research.data.corpora import wordnet
from research.data.tasks import wic
from tests.data.helpers import assert_same_splits

CFG = wic.Config(vocab_size=1000, max_len=24, max_pairs_per_lemma=4, seed=3)  # max_len 24 truncates some rows


@pytest.fixture(scope="module")
def docs():
  """The synsets that have examples (all a pair can come from), by id."""
  corpora.install("wordnet")
  return {d["id"]: d for d in wic.synsets_with_examples()}


@pytest.fixture(scope="module")
def task(docs):
  return wic.build(CFG)


# ------------------------------------------------------------------------------------------------ corpus
def test_parse_line_formats():
  line = (
    "00020410 00 s 04 unapproachable 0 unreachable 0 unreached 0 out_of_reach(p) 0 001 & 00019874 a 0000 | "
    'inaccessibly located or situated; "an unapproachable chalet high in the mountains"; "an unreachable '
    'canyon"; "the unreachable stars"  '
  )
  assert wordnet.parse_line("a", line) == {
    "id": "a:00020410",
    "pos": "a",
    "type": "s",
    "lexfile": 0,
    "lemmas": ["unapproachable", "unreachable", "unreached", "out of reach"],
    "gloss": "inaccessibly located or situated",
    "examples": ["an unapproachable chalet high in the mountains", "an unreachable canyon", "the unreachable stars"],
    "text": "inaccessibly located or situated\nan unapproachable chalet high in the mountains\n"
    "an unreachable canyon\nthe unreachable stars",
  }
  # a quoted phrase inside the definition stays there; ': "' also starts the examples; attributions are dropped
  stride = wordnet.parse_line(
    "n",
    "00249987 04 n 01 stride 1 001 @ 00249501 n 0000 | significant progress (especially"
    ' in the phrase "make strides"); "they made big strides in productivity"  ',
  )
  assert stride["gloss"] == 'significant progress (especially in the phrase "make strides")'
  assert stride["examples"] == ["they made big strides in productivity"]
  swim = wordnet.parse_line(
    "n",
    '00442115 04 n 02 swimming 0 swim 0 000 | the act of swimming; "it was the '
    'swimming they enjoyed most": "they took a short swim in the pool"',
  )
  assert swim["lemmas"] == ["swimming", "swim"]
  assert swim["examples"] == ["it was the swimming they enjoyed most", "they took a short swim in the pool"]
  perm = wordnet.parse_line(
    "n",
    "00399223 04 n 01 permutation 0 001 @ 00398704 n 0000 | complete change in "
    'character or condition; "the permutations...taking place"- Henry Miller  ',
  )
  assert perm["gloss"] == "complete change in character or condition"
  assert perm["examples"] == ["the permutations...taking place"]
  galore = wordnet.parse_line(
    "a",
    "00014358 00 s 02 abounding 0 galore(ip) 0 001 & 00013887 a 0000 | existing in "
    'abundance; "abounding confidence"; "whiskey galore"  ',
  )
  assert galore["lemmas"] == ["abounding", "galore"]


def test_corpus_facts(docs):
  assert corpora.manifest("wordnet")["documents"] == 117_659
  assert len(docs) == 32_891  # synsets with at least one example
  assert collections.Counter(d["pos"] for d in docs.values()) == {"n": 8_734, "v": 9_679, "a": 11_291, "r": 3_187}
  assert sum(len(d["examples"]) for d in docs.values()) == 48_282
  choke = docs["v:00002724"]
  assert choke["lemmas"] == ["choke"] and choke["lexfile"] == 29 and choke["type"] == "v"
  assert choke["gloss"] == "breathe with great difficulty, as when experiencing a strong emotion"
  assert choke["examples"] == ["She choked with emotion when she spoke about her deceased husband"]
  assert all(d["id"] == f"{d['pos']}:{d['id'][2:]}" and len(d["id"]) == 10 for d in docs.values())
  # the "about 10,000 lemma/POS pairs have examples in >= 2 synsets"
  synsets = collections.defaultdict(set)
  for d in docs.values():
    for lemma in d["lemmas"] if d["examples"] else ():
      synsets[lemma.casefold(), d["pos"]].add(d["id"])
  assert sum(len(s) >= 2 for s in synsets.values()) == 10_355


# ------------------------------------------------------------------------------------------------ matching
@pytest.mark.parametrize(
  "lemma,pos,sentence,expected",
  [
    ("run", "v", "he was running late", True),
    ("run", "v", "he ran the business", False),  # irregular forms are not matched
    ("carry", "v", "she carried the bag", True),
    ("bake", "v", "we are baking bread", True),
    ("take a breath", "v", "taking a breath, he dived", True),
    ("take a breath", "v", "take a deep breath", False),
    ("hot dog", "n", "two hot dogs please", True),
    ("dog", "n", "the dog's bowl", True),
    ("dog", "n", "dogma", False),
    ("big", "a", "a bigger house", True),
    ("well-known", "a", "a well known fact", True),
    ("fast", "r", "he ran faster", True),
  ],
)
def test_contains(lemma, pos, sentence, expected):
  assert wic.contains(lemma, pos, wic.words(sentence)) is expected


def test_config_validation():
  with pytest.raises(ValueError, match=r"max_pairs_per_lemma=3; expected an even integer"):
    wic.Config(max_pairs_per_lemma=3)
  with pytest.raises(ValueError, match=r"max_len=4; expected an integer >= 8"):
    wic.Config(max_len=4)
  with pytest.raises(ValueError, match=r"vocab_size='big'"):
    tasks.make_config("wic", {"vocab_size": "big"})


# ------------------------------------------------------------------------------------------------ task
def test_shapes_dtypes_rows(task):
  assert (task.name, task.kind, task.num_classes, task.seq_len) == ("wic", "classify", 2, CFG.max_len)
  tok = wic.sentencepiece(CFG)
  assert task.vocab_size == tok.vocab_size
  truncated = 0
  for split, arrays in task.splits.items():
    tokens, lengths, targets = arrays["tokens"], arrays["lengths"], arrays["targets"]
    assert tokens.dtype == lengths.dtype == targets.dtype == np.int32
    assert tokens.shape == (len(wic.pairs(CFG)[split]), CFG.max_len) and not tokens.flags.writeable
    assert set(np.unique(targets)) == {0, 1}
    mask = np.arange(CFG.max_len) < lengths[:, None]
    assert np.all((tokens != 0) == mask) and np.all(tokens[:, 0] == tokenizer.CLS)
    assert np.all((tokens == tokenizer.SEP).sum(1) == 1) and tokens.max() < task.vocab_size
    for row, pair in zip(tokens, wic.pairs(CFG)[split], strict=True):
      a, b = tok.encode(pair.sentence_a), tok.encode(pair.sentence_b)
      expected = [tokenizer.CLS, *a, tokenizer.SEP, *b]
      if len(expected) > CFG.max_len:  # longest-first truncation keeps a prefix of each sentence
        truncated += 1
        sep = int(np.flatnonzero(row == tokenizer.SEP)[0])
        kept_a, kept_b = row[1:sep].tolist(), row[sep + 1 :].tolist()
        assert kept_a == a[: len(kept_a)] and kept_b == b[: len(kept_b)]
        assert len(kept_a) + len(kept_b) + 2 == CFG.max_len
        assert len(kept_a) == len(a) or len(kept_a) >= len(kept_b) - 1  # only the longer one loses tokens
        assert len(kept_b) == len(b) or len(kept_b) >= len(kept_a) - 1
      else:
        assert row[: len(expected)].tolist() == expected
  assert truncated == sum(task.card["truncated"].values()) > 0


def test_labels_from_synsets_and_lemma_in_both(task, docs):
  for split in task.splits:
    for label, pair in zip(task.splits[split]["targets"], wic.pairs(CFG)[split], strict=True):
      assert label == int(pair.synset_a == pair.synset_b) == pair.label
      assert pair.sentence_a != pair.sentence_b
      for synset, sentence in ((pair.synset_a, pair.sentence_a), (pair.synset_b, pair.sentence_b)):
        doc = docs[synset]
        assert doc["pos"] == pair.pos and sentence in doc["examples"]
        assert pair.lemma in [lemma.casefold() for lemma in doc["lemmas"]]
        # independent check: every lemma word occurs in the sentence, the head word at least as a stem
        lemma_words = re.findall(r"[a-z0-9]+", pair.lemma)
        head = lemma_words[0] if pair.pos == "v" else lemma_words[-1]
        sentence_words = re.findall(r"[a-z0-9]+", sentence.lower())
        stem = head[:-1] if len(head) >= 3 and head[-1] in "ey" else head  # cry -> cr(ied), bake -> bak(ing)
        assert any(w.startswith(stem) for w in sentence_words), (pair, sentence)
        assert set(lemma_words) - {head} <= set(sentence_words)


def test_balanced_per_split_and_lemma(task):
  for split in task.splits:
    assert task.splits[split]["targets"].mean() == 0.5
    per_lemma = collections.defaultdict(collections.Counter)
    for pair in wic.pairs(CFG)[split]:
      per_lemma[pair.lemma, pair.pos][pair.label] += 1
    assert all(c[0] == c[1] <= CFG.max_pairs_per_lemma // 2 for c in per_lemma.values())
  assert task.baseline == 0.5 and task.card["balance"] == {"train": 0.5, "val": 0.5, "test": 0.5}


def test_splits_disjoint_by_lemma(task):
  lemmas = {s: {p.lemma for p in wic.pairs(CFG)[s]} for s in task.splits}
  assert not (lemmas["train"] & lemmas["val"] or lemmas["train"] & lemmas["test"] or lemmas["val"] & lemmas["test"])
  assert all(wic.split_of(lemma, CFG.seed) == s for s, ls in lemmas.items() for lemma in ls)
  sizes = {s: len(ls) for s, ls in lemmas.items()}
  assert sizes["train"] > 6 * sizes["test"] > 0 and sizes["val"] > 0
  # the tokenizer's training text is the train sentences only
  train = set(wic.train_sentences(CFG))
  assert train == {s for p in wic.pairs(CFG)["train"] for s in (p.sentence_a, p.sentence_b)}


def test_deterministic_by_seed(task):
  wic.pairs.cache_clear()
  wic.build.cache_clear()
  wic.sentencepiece.cache_clear()
  again = wic.build(CFG)
  assert again is not task
  assert_same_splits(task, again)
  other = wic.pairs(dataclasses.replace(CFG, seed=CFG.seed + 1))
  assert {p.lemma for p in other["test"]} != {p.lemma for p in wic.pairs(CFG)["test"]}
  assert not {p.lemma for p in other["train"]} & {p.lemma for p in other["test"]}


def test_registry_build_and_card(task):
  assert tasks.build("wic", dataclasses.asdict(CFG)) is wic.build(CFG)
  card = task.card
  assert card["sizes"] == {s: len(a["targets"]) for s, a in task.splits.items()}
  assert card["lengths"]["train"]["max"] > CFG.max_len  # lengths are before truncation
  assert "wordnet-base" in card["source"]
