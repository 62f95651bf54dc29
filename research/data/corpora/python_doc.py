"""Corpus ``python-doc``: the Python 3.11 documentation sources shipped by Debian's ``python3.11-doc``.

Source: the Debian bookworm package ``python3.11-doc``; Sphinx copies each reStructuredText source to
``usr/share/doc/python3.11/html/_sources/<path>.rst.txt`` (licence: PSF-2.0).

One document per file, sorted by id:

* ``id``: the path relative to ``_sources/``, e.g. ``"library/os.rst.txt"``;
* ``dir``: its top-level directory (``"library"``), or ``"."`` for files directly in ``_sources/``;
* ``text``: the file decoded as UTF-8 with ``errors="replace"``.

Measured on python3.11-doc 3.11.2-6+deb12u8: 497 documents, 11.0 MB of text.
"""

from __future__ import annotations

from pathlib import Path

from research.data.corpora import Corpus, CorpusError, register

PACKAGE = "python3.11-doc"
ROOT = "usr/share/doc/python3.11/html/_sources"


def build(raw: Path) -> list[dict]:
  root = raw / ROOT
  if not root.is_dir():
    raise CorpusError(f"{PACKAGE}: {ROOT} not found in the unpacked package (did the layout change?)")
  docs = []
  for path in root.rglob("*.rst.txt"):
    if not path.is_file():
      continue
    doc_id = path.relative_to(root).as_posix()
    head, sep, _ = doc_id.partition("/")
    docs.append({"id": doc_id, "dir": head if sep else ".", "text": path.read_bytes().decode("utf-8", "replace")})
  return sorted(docs, key=lambda d: d["id"])


register(Corpus("python-doc", f"deb:{PACKAGE}", "Python 3.11 documentation sources (reStructuredText)", build))
