"""Corpus ``linux-doc``: the Linux kernel documentation sources shipped by Debian's ``linux-doc-6.1``.

Source: the Debian bookworm package ``linux-doc-6.1`` (fetched with ``apt-get download``). Its
``usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz`` are the kernel's reStructuredText sources,
gzipped by Debian (licences: GPL-2.0 and others, see the package's ``copyright``).

One document per file, sorted by id:

* ``id``: the path relative to ``Documentation/`` without ``.gz``, e.g. ``"admin-guide/README.rst"``;
* ``dir``: its top-level directory (``"admin-guide"``), or ``"."`` for the few files directly in
  ``Documentation/`` (``index.rst``, ``arch.rst``, ``subsystem-apis.rst``);
* ``text``: the decompressed bytes decoded as UTF-8 with ``errors="replace"``.

Measured on linux-doc-6.1 6.1.176-1: 3,184 documents, 24.2 MB of text, 77 top-level directories plus the
3 root files; 10 directories hold >= 50 documents (one of them ``translations/``).

Cross-references, shared by the text_cls and retrieval tasks (Sphinx conventions):

* :data:`DOC_ROLE` ``:doc:`target``` or ``:doc:`Title <target>```: a document path without ``.rst``,
  absolute from ``Documentation/`` when it starts with ``/``, else relative to the citing document's dir;
* :data:`PATH_MENTION` ``Documentation/<path>.rst`` written out in the text;
* :data:`REF_ROLE` ``:ref:`label``` or ``:ref:`Title <label>```, resolved through the label definitions
  :data:`LABEL_DEF` ``.. _label:`` (or ``.. _`label`:``), case-insensitively (Sphinx lowercases labels).
"""

from __future__ import annotations

import gzip
import posixpath
import re
from pathlib import Path

from research.data.corpora import Corpus, CorpusError, register

PACKAGE = "linux-doc-6.1"
ROOT = f"usr/share/doc/{PACKAGE}/Documentation"


DOC_ROLE = re.compile(r":doc:`([^`]*)`")
REF_ROLE = re.compile(r":ref:`([^`]*)`")
PATH_MENTION = re.compile(r"Documentation/([\w./+-]*?\.rst)\b", re.ASCII)
LABEL_DEF = re.compile(r"^[ \t]*\.\. _(?:`([^`\n]+)`|([^:`\n]+)):[ \t]*$", re.M)


def role_target(content: str) -> str:
  """The target of a role's content: ``"Title <target>"`` -> ``"target"``, ``"target"`` -> itself."""
  m = re.search(r"<([^<>]*)>\s*$", content)
  return " ".join((m.group(1) if m else content).split())


def resolve_doc(citing: str, target: str) -> str:
  """A ``:doc:`` target as a document id, e.g. ``("a/b/c.rst", "../d")`` -> ``"a/d.rst"``."""
  path = target[1:] if target.startswith("/") else posixpath.join(posixpath.dirname(citing), target)
  path = posixpath.normpath(path)
  return path if path.endswith(".rst") else path + ".rst"


def labels(docs: list[dict]) -> dict[str, str]:
  """Lowercased label -> id of the document defining it (labels defined twice are dropped as ambiguous)."""
  owners: dict[str, set[str]] = {}
  for doc in docs:
    for m in LABEL_DEF.finditer(doc["text"]):
      owners.setdefault(" ".join((m.group(1) or m.group(2)).lower().split()), set()).add(doc["id"])
  return {label: next(iter(ids)) for label, ids in owners.items() if len(ids) == 1}


def links(doc: dict, ids: set[str] | frozenset[str], label_owner: dict[str, str] | None = None) -> set[str]:
  """Ids of the documents that `doc` cites by ``:doc:`` or a ``Documentation/...rst`` path (and by ``:ref:``
  when `label_owner` is given); links to missing documents and to `doc` itself are dropped."""
  out = {resolve_doc(doc["id"], role_target(m.group(1))) for m in DOC_ROLE.finditer(doc["text"])}
  out |= {posixpath.normpath(m.group(1)) for m in PATH_MENTION.finditer(doc["text"])}
  if label_owner is not None:
    out |= {label_owner.get(role_target(m.group(1)).lower(), "") for m in REF_ROLE.finditer(doc["text"])}
  return {t for t in out if t in ids and t != doc["id"]}


def top_dir(doc_id: str) -> str:
  """``"admin-guide/README.rst"`` -> ``"admin-guide"``; a root file -> ``"."``."""
  head, sep, _ = doc_id.partition("/")
  return head if sep else "."


def build(raw: Path) -> list[dict]:
  root = raw / ROOT
  if not root.is_dir():
    raise CorpusError(f"{PACKAGE}: {ROOT} not found in the unpacked package (did the layout change?)")
  docs = []
  for path in root.rglob("*.rst.gz"):
    if not path.is_file():
      continue
    doc_id = path.relative_to(root).as_posix()[: -len(".gz")]
    text = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
    docs.append({"id": doc_id, "dir": top_dir(doc_id), "text": text})
  return sorted(docs, key=lambda d: d["id"])


register(Corpus("linux-doc", f"deb:{PACKAGE}", "Linux kernel Documentation/**/*.rst (reStructuredText)", build))
