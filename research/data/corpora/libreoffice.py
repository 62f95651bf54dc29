"""LibreOffice 7.4 help in 34 languages, one document per paragraph, aligned across languages by paragraph id.

Source: the Debian bookworm packages ``libreoffice-help-<lang>`` (version 4:7.4.7-1+deb12u*, MPL-2.0). Each
unpacks HTML pages to ``usr/share/libreoffice/help/<dir>/text/**/*.html`` (2,560 pages per language; with
``<dir>/noscript.html`` beside them, 2,561), where ``<dir>`` is the package's language with a capitalised
region: ``de``, ``en-US``, ``pt-BR``, ``zh-CN``. ``libreoffice-help-ca`` ships ``ca`` and ``ca-valencia`` (the corpus
``libreoffice-help-ca-valencia`` reads the latter); ``libreoffice-help-sk`` ships no text (``help/sk`` is a
symlink to ``cs``), so ``sk`` is not a corpus: the 34 languages are the 33 other packages' and ``ca-valencia``.
The pages are generated from the same ``.xhp`` sources in every language, so file names and paragraph ids
agree across languages and paragraphs align by ``(file, id)``.

A paragraph is an element (``p``, ``h1``-``h6``) whose ``id`` starts with ``par_id`` or ``hd_id`` (bookmarks
``bm_id`` and switch spans are not paragraphs). Its text is the text of its descendants, parsed with the
standard library's :class:`html.parser.HTMLParser`, with these conventions:

* HTML entities and character references are decoded; ``<script>``/``<style>`` content is dropped;
* a switch (``<span class="switchinline">`` or ``class="switch"``) inside a paragraph holds variants for
  platforms or applications, each a hidden child (``<span hidden="true" id="MAC…">Befehl</span><span
  hidden="true" id="default…">Strg</span>``); it reads as its ``default…`` variant, or as its first variant
  when it has none (``WRITER…``/``CALC…`` only), so a paragraph reads as the help viewer shows it on Linux
  (or in the first module named); text between variants is dropped. Other hidden elements inside a
  paragraph are dropped; switches wrapping whole paragraphs do not hide them;
* ``<br>`` and block tags (``p``, ``div``, ``li``, ``td``, ``h1``-``h6``…) inside a paragraph separate words;
  inline tags do not (``<span>Strg</span><span>+F</span>`` is ``Strg+F``);
* whitespace is collapsed (``str.split``, so NBSP too), the text is NFC-normalised and stripped;
* ids are unique only per ``.xhp`` source, so a page that embeds sections of other pages can repeat one
  (``lib_ScriptForge.html`` repeats ``hd_id731582733781114`` six times, with six texts): the k-th occurrence
  (k >= 2) in page order is named ``<id>~k``, which is the same in every language;
* paragraphs with no text (icon-only cells) are dropped, after that numbering.

A document is ``{"id": "<file>#<par id>", "file": "text/…/x.html", "par": "<par id>", "tag": "p"|"h1"…,
"lang": "<lang>", "text": …}``, with ``file`` relative to the language directory and hence equal across
languages. Documents come in sorted file order, then page order.

Measured on bookworm's 4:7.4.7-1+deb12u14 packages: 64,541-64,589 paragraphs per language (en-us 64,564;
3.5-8.1 MB of text), on 2,540 of the 2,560 pages (2,541 for es and nl); 64,517 ids occur in all 34
languages and 64,633 in at least one. Installing one language takes 10-20 s (mostly HTML parsing).
"""

from __future__ import annotations

import dataclasses
import functools
import html.parser
import re
import unicodedata
from pathlib import Path

from research.data.corpora import Corpus, CorpusError, read, register, require

# Languages with their own help text in Debian bookworm: the 33 libreoffice-help-<lang> packages other than sk,
# and ca-valencia, which the ca package ships beside ca.
LANGS = (
  "ca",
  "ca-valencia",
  "cs",
  "da",
  "de",
  "dz",
  "el",
  "en-gb",
  "en-us",
  "es",
  "et",
  "eu",
  "fi",
  "fr",
  "gl",
  "hi",
  "hu",
  "id",
  "it",
  "ja",
  "km",
  "ko",
  "nl",
  "om",
  "pl",
  "pt",
  "pt-br",
  "ru",
  "sl",
  "sv",
  "tr",
  "vi",
  "zh-cn",
  "zh-tw",
)
PACKAGES = {"ca-valencia": "ca"}  # language -> the libreoffice-help-<...> package that ships it, where different
NO_TEXT = {"sk": "libreoffice-help-sk ships only a symlink help/sk -> cs (and depends on libreoffice-help-cs)"}
HELP_ROOT = "usr/share/libreoffice/help"
PARAGRAPH_ID = re.compile(r"(par|hd)_id")
VOID_TAGS = frozenset(("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"))
BLOCK_TAGS = frozenset(
  (
    "address",
    "blockquote",
    "dd",
    "div",
    "dl",
    "dt",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "ol",
    "p",
    "pre",
    "table",
    "td",
    "th",
    "tr",
    "ul",
  )
)
SKIP_TAGS = frozenset(("script", "style"))
SWITCH_CLASSES = frozenset(("switch", "switchinline"))


def corpus_name(lang: str) -> str:
  return f"libreoffice-help-{lang}"


def package(lang: str) -> str:
  return f"libreoffice-help-{PACKAGES.get(lang, lang)}"


def check_lang(lang: str) -> str:
  if lang in NO_TEXT:
    raise ValueError(f"LibreOffice help language {lang!r} has no text of its own: {NO_TEXT[lang]}")
  if lang not in LANGS:
    raise ValueError(f"unknown LibreOffice help language {lang!r}; expected one of {', '.join(LANGS)}")
  return lang


def normalise(text: str) -> str:
  return unicodedata.normalize("NFC", " ".join(text.split()))


@dataclasses.dataclass
class _Switch:
  depth: int  # depth of the switch element inside the paragraph
  variants: list[tuple[str, list[str]]] = dataclasses.field(default_factory=list)  # (id, text parts)
  reading: bool = False  # a variant (a child element of the switch) is open

  def text(self) -> str:
    chosen = [parts for vid, parts in self.variants if vid.startswith("default")] or [v[1] for v in self.variants]
    return "".join(chosen[0]) if chosen else ""


class ParagraphParser(html.parser.HTMLParser):
  """Collects ``(id, tag, text)`` for every ``par_id…``/``hd_id…`` element of one page (see module doc)."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.paragraphs: list[tuple[str, str, str]] = []
    self._current: tuple[str, str] | None = None  # (id, tag) of the paragraph being read
    self._depth = 0  # open non-void elements inside it, itself included
    self._skip_from = 0  # depth of an open hidden element outside a switch (or script); 0: none
    self._parts: list[str] = []
    self._switches: list[_Switch] = []  # open switches, innermost last

  def _sink(self) -> list[str] | None:
    """Where text goes now: the paragraph, the open variant of the innermost switch, or nowhere."""
    if self._skip_from:
      return None
    if self._switches:
      top = self._switches[-1]
      return top.variants[-1][1] if top.reading else None
    return self._parts

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag in VOID_TAGS:
      self.handle_startendtag(tag, attrs)
      return
    if self._current is None:
      pid = attrs.get("id") or ""
      if PARAGRAPH_ID.match(pid):
        self._current, self._depth, self._skip_from, self._parts, self._switches = (pid, tag), 1, 0, [], []
      return
    self._depth += 1
    if self._skip_from:
      return
    if self._switches and not self._switches[-1].reading:  # a child of a switch: one variant
      self._switches[-1].variants.append((attrs.get("id") or "", []))
      self._switches[-1].reading = True
    elif tag in SKIP_TAGS or "hidden" in attrs:
      self._skip_from = self._depth
    elif SWITCH_CLASSES & set((attrs.get("class") or "").split()):
      self._switches.append(_Switch(self._depth))
    elif tag in BLOCK_TAGS:
      self._sink().append(" ")  # not skipping, and not between the variants of a switch

  def handle_startendtag(self, tag, attrs):
    sink = self._sink() if self._current is not None else None
    if sink is not None and tag == "br":
      sink.append(" ")

  def handle_endtag(self, tag):
    if self._current is None or tag in VOID_TAGS:
      return
    sink = self._sink()
    if sink is not None and tag in BLOCK_TAGS:
      sink.append(" ")
    closing, self._depth = self._depth, self._depth - 1
    if self._skip_from:
      self._skip_from = 0 if closing == self._skip_from else self._skip_from
    elif self._switches:
      top = self._switches[-1]
      if top.reading and closing == top.depth + 1:
        top.reading = False
      elif closing == top.depth:
        self._switches.pop()
        self._sink().append(top.text())
    if self._depth == 0:
      pid, ptag = self._current
      self.paragraphs.append((pid, ptag, normalise("".join(self._parts))))
      self._current = None

  def handle_data(self, data):
    sink = self._sink() if self._current is not None else None
    if sink is not None:
      sink.append(data)


def parse_paragraphs(page: str) -> list[tuple[str, str, str]]:
  """``(id, tag, text)`` of one HTML page's non-empty paragraphs in page order; repeated ids get ``~k``."""
  parser = ParagraphParser()
  parser.feed(page)
  parser.close()
  seen: dict[str, int] = {}
  out = []
  for pid, tag, text in parser.paragraphs:
    seen[pid] = seen.get(pid, 0) + 1
    if text:
      out.append((pid if seen[pid] == 1 else f"{pid}~{seen[pid]}", tag, text))
  return out


def language_dir(raw_root: Path, lang: str) -> Path:
  """``usr/share/libreoffice/help/<dir>`` of an unpacked package: the folder with a ``text/`` whose name is
  ``lang`` up to case (``en-US`` for en-us, ``ca-valencia`` beside ``ca``), else the only folder with a ``text/``."""
  dirs = sorted(p.parent for p in (raw_root / HELP_ROOT).glob("*/text") if p.is_dir())
  named = [d for d in dirs if d.name.lower() == lang]
  if len(named) == 1 or len(dirs) == 1:
    return (named or dirs)[0]
  raise CorpusError(
    f"expected a language folder {lang!r} with text/ under {raw_root / HELP_ROOT}, found {[d.name for d in dirs]}"
  )


def build_documents(raw_root: Path, lang: str) -> list[dict]:
  """All paragraphs of an unpacked ``libreoffice-help-<lang>`` package, as corpus documents."""
  root = language_dir(raw_root, lang)
  docs = []
  for path in sorted((root / "text").rglob("*.html")):
    file = path.relative_to(root).as_posix()
    for pid, tag, text in parse_paragraphs(path.read_text(encoding="utf-8")):
      docs.append({"id": f"{file}#{pid}", "file": file, "par": pid, "tag": tag, "lang": lang, "text": text})
  return docs


def paragraphs(lang: str) -> dict[str, dict]:
  """Installed paragraphs of one language by document id (raises CorpusError naming the install command).

  Memoised per installed copy (data dir and manifest time), so callers share the dict: do not mutate it.
  """
  name = corpus_name(check_lang(lang))
  manifest = require(name) / "manifest.json"
  return _load(name, str(manifest), manifest.stat().st_mtime_ns)


@functools.lru_cache(maxsize=6)
def _load(name: str, manifest: str, mtime_ns: int) -> dict[str, dict]:
  return {d["id"]: d for d in read(name)}


def aligned(langs: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
  """``(id, (text in langs[0], text in langs[1], …))`` for the ids present in every language, sorted by id."""
  tables = [paragraphs(lang) for lang in langs]
  common = set(tables[0]).intersection(*tables[1:])
  return [(i, tuple(t[i]["text"] for t in tables)) for i in sorted(common)]


def _register(lang: str) -> None:
  register(
    Corpus(
      name=corpus_name(lang),
      source=f"deb:{package(lang)}",
      description=f"LibreOffice 7.4 help ({lang}): par_id/hd_id paragraphs of {HELP_ROOT}/<{lang}>/text/**/*.html, "
      f"aligned across languages by file#id",
      build=lambda raw_root: build_documents(raw_root, lang),
    )
  )


for _lang in LANGS:
  _register(_lang)
