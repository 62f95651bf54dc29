"""Corpus ``vader``: the human-rated sentiment texts of Hutto & Gilbert (ICWSM 2014), from the VADER sdist.

Source: the PyPI sdist ``vaderSentiment==3.3.2`` (MIT licence), archive
``vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz``, folder ``hutto_ICWSM_2014/``.
Reference: C. J. Hutto and E. Gilbert. "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of
Social Media Text." ICWSM 2014.

Each of the four corpora has two tab-separated files (CRLF line ends, one with a UTF-8 BOM):
``<stem>_GroundTruth.txt`` (``ID  MEAN-RATING  TEXT``) and ``<stem>_anonDataRatings.txt``
(``ID  MEAN-RATING  SD  [raw ratings]``); ratings are on -4 (extremely negative) .. +4.

One document per rated text, in corpus order then file order:

* ``id``: ``"<corpus>:<orig id>"``, e.g. ``"movie:1"``, ``"amazon:1_1"``;
* ``corpus``: ``movie`` (movieReviewSnippets), ``amazon`` (amazonReviewSnippets), ``nyt``
  (nytEditorialSnippets) or ``tweets``;
* ``text``: the GroundTruth text, HTML entities unescaped twice (``&amp;`` -> ``&``; 15 texts are escaped
  twice, e.g. ``&amp;amp;`` in NYT, ``&amp;#38;`` in Amazon, ``&amp;#39;`` in one tweet), stripped;
* ``rating``: the GroundTruth mean rating (float), the value the paper evaluates against;
* ``sd``, ``raters``: standard deviation and number of raw ratings from the anonDataRatings file.

Measured on vaderSentiment 3.3.2: 23,703 documents (movie 10,605, amazon 3,708, nyt 5,190, tweets 4,200),
as the issue states. Ids match one to one between the two files. For 199 tweets (those rated by 92-99
people in the raw file, the rest have 20) the GroundTruth mean differs from the mean of the raw ratings,
e.g. tweet 2: 1.443 vs 2.263; ``rating`` is always the GroundTruth value. Exact duplicates of a text within
a corpus: movie 2, amazon 11, nyt 72, tweets 0 (the ``sentiment`` task deduplicates).
"""

from __future__ import annotations

import html
import json
import tarfile
from pathlib import Path

from research.data.corpora import Corpus, CorpusError, register

SPEC = "vaderSentiment==3.3.2"
ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
FOLDER = "hutto_ICWSM_2014"
CORPORA = {
  "movie": "movieReviewSnippets",
  "amazon": "amazonReviewSnippets",
  "nyt": "nytEditorialSnippets",
  "tweets": "tweets",
}


def _lines(data: bytes) -> list[str]:
  return [line for line in data.decode("utf-8-sig").splitlines() if line.strip()]


def parse(corpus: str, ground_truth: bytes, ratings: bytes) -> list[dict]:
  """The two files of one corpus -> documents (see the module docstring)."""
  raw = {}
  for line in _lines(ratings):
    orig, _, sd, values = line.split("\t")
    raw[orig] = (float(sd), len(json.loads(values)))
  docs = []
  for line in _lines(ground_truth):
    orig, mean, text = line.split("\t", 2)
    if orig not in raw:
      raise CorpusError(f"vader: {corpus} text {orig!r} has no row in {CORPORA[corpus]}_anonDataRatings.txt")
    sd, raters = raw[orig]
    docs.append(
      {
        "id": f"{corpus}:{orig}",
        "corpus": corpus,
        "text": html.unescape(html.unescape(text)).strip(),
        "rating": float(mean),
        "sd": sd,
        "raters": raters,
      }
    )
  return docs


def build(raw: Path) -> list[dict]:
  archive = raw / ARCHIVE
  if not archive.is_file():
    raise CorpusError(f"vader: {ARCHIVE} not found in the unpacked sdist (did the layout change?)")
  docs = []
  with tarfile.open(archive) as tar:

    def member(name: str) -> bytes:
      try:
        return tar.extractfile(f"{FOLDER}/{name}").read()
      except KeyError:
        raise CorpusError(f"vader: {FOLDER}/{name} not found in {ARCHIVE}") from None

    for corpus, stem in CORPORA.items():
      docs.extend(parse(corpus, member(f"{stem}_GroundTruth.txt"), member(f"{stem}_anonDataRatings.txt")))
  return docs


register(Corpus("vader", f"sdist:{SPEC}", "VADER human-rated sentiment texts (movie, amazon, nyt, tweets)", build))
