"""The `vader` corpus (research/data/corpora/vader.py) and the `sentiment` task (research/data/tasks/sentiment.py)."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pytest

from research.data import corpora, tasks, tokenizer
from research.data.corpora import vader
from research.data.tasks import sentiment
from tests.data.helpers import assert_same_splits

BINARY = sentiment.Config(corpus="amazon", target="binary", vocab_size=500, max_len=24, seed=5)
REGRESSION = dataclasses.replace(BINARY, target="regression")  # the same splits and tokenizer


@pytest.fixture(scope="module")
def docs():
  corpora.install("vader")
  return corpora.read("vader")


@pytest.fixture(scope="module")
def amazon_ratings(docs):
  """Independent of the task code: whitespace-collapsed text -> mean rating of its copies."""
  groups = collections.defaultdict(list)
  for d in docs:
    if d["corpus"] == "amazon":
      groups[" ".join(d["text"].split())].append(d["rating"])
  return {text: float(np.mean(r)) for text, r in groups.items()}


@pytest.fixture(scope="module")
def binary(docs):
  return sentiment.build(BINARY)


@pytest.fixture(scope="module")
def regression(docs):
  return sentiment.build(REGRESSION)


# ------------------------------------------------------------------------------------------------ corpus
def test_parse_files():
  truth = b"1_1\t-0.9\tno picture &amp; no sound.\r\n1_2\t0.0\t  A.T.&amp;amp;T. fine  \r\n"
  ratings = "\ufeff1_1\t-0.9\t0.76811\t[0, -1, -2]\r\n1_2\t0\t0.0\t[0, 0]\r\n".encode()
  assert vader.parse("amazon", truth, ratings) == [
    {
      "id": "amazon:1_1",
      "corpus": "amazon",
      "text": "no picture & no sound.",
      "rating": -0.9,
      "sd": 0.76811,
      "raters": 3,
    },
    {"id": "amazon:1_2", "corpus": "amazon", "text": "A.T.&T. fine", "rating": 0.0, "sd": 0.0, "raters": 2},
  ]
  with pytest.raises(corpora.CorpusError, match="no row in amazonReviewSnippets_anonDataRatings.txt"):
    vader.parse("amazon", truth, ratings.splitlines()[0])


def test_corpus_facts(docs):
  assert collections.Counter(d["corpus"] for d in docs) == {
    "movie": 10_605,
    "amazon": 3_708,
    "nyt": 5_190,
    "tweets": 4_200,
  }
  assert len({d["id"] for d in docs}) == len(docs) == 23_703
  assert docs[0] == {
    "id": "movie:1",
    "corpus": "movie",
    "rating": 2.26666666667,
    "sd": 1.06249,
    "raters": 15,
    "text": "The Rock is destined to be the 21st Century's new ''Conan'' and that he's going to make "
    "a splash even greater than Arnold Schwarzenegger, Jean Claud Van Damme or Steven Segal.",
  }
  assert all(-4 <= d["rating"] <= 4 and d["text"] == d["text"].strip() and d["text"] for d in docs)
  assert not any("&amp;" in d["text"] or "&quot;" in d["text"] for d in docs)
  copies = collections.Counter((d["corpus"], " ".join(d["text"].split())) for d in docs)
  extra = collections.Counter()
  for (corpus, _), n in copies.items():
    extra[corpus] += n - 1
  assert extra == {"movie": 2, "amazon": 11, "nyt": 72, "tweets": 0}


# ------------------------------------------------------------------------------------------------ task
def test_config_validation():
  with pytest.raises(ValueError, match=r"corpus='imdb'; expected one of all, movie, amazon, nyt, tweets"):
    sentiment.Config(corpus="imdb")
  with pytest.raises(ValueError, match=r"target='sign'; expected one of binary, regression"):
    tasks.make_config("sentiment", {"target": "sign"})
  with pytest.raises(ValueError, match=r"max_len=1; expected an integer >= 2"):
    sentiment.Config(max_len=1)


def test_shapes_dtypes_rows(binary, regression):
  assert (binary.kind, binary.num_classes, regression.kind, regression.num_classes) == ("classify", 2, "regress", 1)
  tok = sentiment.sentencepiece(BINARY.corpus, BINARY.vocab_size, BINARY.seed)
  assert binary.vocab_size == regression.vocab_size == tok.vocab_size
  for task in (binary, regression):
    assert task.seq_len == BINARY.max_len
    for split, arrays in task.splits.items():
      tokens, lengths, targets = arrays["tokens"], arrays["lengths"], arrays["targets"]
      assert tokens.dtype == lengths.dtype == np.int32 and not tokens.flags.writeable
      assert targets.dtype == (np.int32 if task is binary else np.float32)
      assert np.all((tokens != 0) == (np.arange(BINARY.max_len) < lengths[:, None]))
      examples = sentiment.examples(BINARY if task is binary else REGRESSION)[split]
      assert tokens.shape == (len(examples), BINARY.max_len)
      for row, length, example in zip(tokens, lengths, examples, strict=True):
        expected = [tokenizer.CLS, *tok.encode(example.text)][: BINARY.max_len]
        assert row[:length].tolist() == expected
  assert sum(binary.card["truncated"].values()) > 0


def test_binary_labels_are_signs(binary, amazon_ratings):
  for split, arrays in binary.splits.items():
    examples = sentiment.examples(BINARY)[split]
    ratings = np.array([amazon_ratings[" ".join(e.text.split())] for e in examples])
    assert np.all(ratings != 0)
    np.testing.assert_array_equal(arrays["targets"], (ratings > 0).astype(np.int32))
  zeros = sum(r == 0 for r in amazon_ratings.values())
  assert binary.card["zero_rated_dropped"] == zeros > 0
  assert sum(binary.card["sizes"].values()) == len(amazon_ratings) - zeros
  train, test = binary.splits["train"]["targets"], binary.splits["test"]["targets"]
  assert binary.baseline == np.mean(test == np.argmax(np.bincount(train)))


def test_regression_targets_are_ratings(regression, amazon_ratings):
  seen = []
  for split, arrays in regression.splits.items():
    texts = [" ".join(e.text.split()) for e in sentiment.examples(REGRESSION)[split]]
    expected = np.array([amazon_ratings[t] for t in texts], np.float32)
    np.testing.assert_array_equal(arrays["targets"], expected)
    seen += texts
  assert sorted(seen) == sorted(amazon_ratings)  # every deduplicated text exactly once
  train, test = regression.splits["train"]["targets"], regression.splits["test"]["targets"]
  assert regression.baseline == pytest.approx(np.mean((test.astype(np.float64) - train.mean()) ** 2), rel=1e-6)
  assert regression.card["duplicates_merged"] == 11


def test_splits_disjoint_by_text(regression):
  keys = {s: [e.text.casefold() for e in sentiment.examples(REGRESSION)[s]] for s in regression.splits}
  assert all(len(set(k)) == len(k) for k in keys.values())
  train, val, test = (set(keys[s]) for s in ("train", "val", "test"))
  assert not (train & val or train & test or val & test)
  assert len(train) > 6 * len(test) > 0 and val
  # binary splits are the regression splits minus the zero-rated texts
  for s in regression.splits:
    assert {e.id for e in sentiment.examples(BINARY)[s]} <= {e.id for e in sentiment.examples(REGRESSION)[s]}


def test_case_variants_share_a_split(docs):
  """The contrived tweets differ only in case (and rating); they are separate examples in one split."""
  yay = [t for t in sentiment.texts("tweets") if t.key == "yay. another good phone interview."]
  assert [(t.id, t.rating) for t in yay] == [("tweets:2", 1.443298969), ("tweets:1482", 1.865979381)]
  assert sentiment.split_of(yay[0].key, 0) == sentiment.split_of(yay[1].key, 0)


def test_deterministic_by_seed(binary):
  sentiment.examples.cache_clear()
  sentiment.build.cache_clear()
  sentiment.sentencepiece.cache_clear()
  again = sentiment.build(BINARY)
  assert again is not binary
  assert_same_splits(binary, again)
  assert tasks.build("sentiment", dataclasses.asdict(BINARY)) is again
  other = sentiment.examples(dataclasses.replace(BINARY, seed=BINARY.seed + 1))
  assert {e.id for e in other["test"]} != {e.id for e in sentiment.examples(BINARY)["test"]}
