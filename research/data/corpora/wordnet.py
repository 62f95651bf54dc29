"""Corpus ``wordnet``: the synsets of Princeton WordNet 3.0, from Debian's ``wordnet-base``.

Source: the Debian bookworm package ``wordnet-base`` (1:3.0-37), files ``usr/share/wordnet/data.{noun,verb,
adj,adv}`` in the WordNet database format (wndb(5WN)); licence: the WordNet 3.0 licence (BSD-like). Lines
starting with two spaces are the licence header and are skipped. A data line is
``offset lex_filenum ss_type w_cnt (word lex_id)*w_cnt p_cnt pointers... [frames] | gloss`` with ``w_cnt``
and ``lex_id`` in hexadecimal.

One document per synset, sorted by id:

* ``id``: ``"<pos>:<offset>"`` with pos ``n``/``v``/``a``/``r`` from the file (satellite adjectives are ``a``),
  e.g. ``"n:00001740"``; offsets are unique within a file, so ids are unique;
* ``pos``, ``type`` (ss_type: ``n v a s r``; ``s`` = satellite adjective), ``lexfile`` (lex_filenum, int);
* ``lemmas``: the synset's words in file order, underscores turned into spaces and the adjective
  position markers ``(a)``, ``(p)``, ``(ip)`` removed (case kept: ``"Einstein"``);
* ``gloss``: the definition, i.e. the gloss up to the first ``; "`` or ``: "`` (the separator before the
  first example); a quoted phrase inside the definition, as in ``(especially in the phrase "make
  strides")``, stays in the definition;
* ``examples``: every double-quoted string after that separator (quotes removed, stripped, empty
  ones dropped); attributions outside the quotes (``"..."- Henry Miller``) are dropped;
* ``text``: gloss and examples joined with newlines.

Measured on wordnet-base 1:3.0-37: 117,659 synsets (82,115 n, 13,767 v, 18,156 a, 3,621 r) and 48,282
examples. The issue's 48,339 counts every double-quoted string after ``|``, which includes 57 quoted
phrases inside definitions or with no ``; "`` separator (e.g. ``woven of worsted yarns "he wore a worsted
suit"``); those stay in the gloss here.
"""

from __future__ import annotations

import re
from pathlib import Path

from research.data.corpora import Corpus, CorpusError, register

PACKAGE = "wordnet-base"
ROOT = "usr/share/wordnet"
FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}

_EXAMPLES_START = re.compile(r'[;:] "')
_QUOTED = re.compile(r'"([^"]*)"')
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def parse_line(pos: str, line: str) -> dict:
  """One data-file line -> a synset document (see the module docstring)."""
  head, sep, gloss = line.partition(" | ")
  if not sep:  # a synset without a gloss has no " | " (none in WordNet 3.0, but the format allows it)
    head, gloss = line.split("|", 1)[0], ""
  fields = head.split()
  offset, lexfile, ss_type, count = fields[0], int(fields[1]), fields[2], int(fields[3], 16)
  lemmas = [_ADJ_MARKER.sub("", w).replace("_", " ") for w in fields[4 : 4 + 2 * count : 2]]
  gloss = gloss.strip()
  m = _EXAMPLES_START.search(gloss)
  definition, rest = (gloss[: m.start()], gloss[m.start() + 2 :]) if m else (gloss, "")
  examples = [e.strip() for e in _QUOTED.findall(rest) if e.strip()]
  definition = definition.strip().rstrip(";").strip()
  return {
    "id": f"{pos}:{offset}",
    "pos": pos,
    "type": ss_type,
    "lexfile": lexfile,
    "lemmas": lemmas,
    "gloss": definition,
    "examples": examples,
    "text": "\n".join([definition, *examples]),
  }


def build(raw: Path) -> list[dict]:
  root = raw / ROOT
  docs = []
  for pos, name in FILES.items():
    path = root / name
    if not path.is_file():
      raise CorpusError(f"{PACKAGE}: {ROOT}/{name} not found in the unpacked package (did the layout change?)")
    with path.open(encoding="utf-8", errors="replace") as f:
      docs.extend(parse_line(pos, line.rstrip("\n")) for line in f if line.strip() and not line.startswith("  "))
  return sorted(docs, key=lambda d: d["id"])


register(Corpus("wordnet", f"deb:{PACKAGE}", "WordNet 3.0 synsets: lemmas, glosses, example sentences", build))
