"""LibreOffice help corpora (research/data/corpora/libreoffice.py) and the xling task (research/data/tasks/xling.py).

Needs the three corpora CI installs (en-us, de, fr); the module fixture installs them when missing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from research.data import corpora, tasks, tokenizer
from research.data.corpora import libreoffice
from research.data.tasks import xling

FIXTURE = Path(__file__).parent / "fixtures" / "lo_page.html"
LANGS = ("en-us", "de", "fr")
SMALL = xling.Config(pair=("en-us", "de"), vocab_size=1000, max_len=32, num_train=600, num_val=120, num_test=120)


@pytest.fixture(scope="module")
def installed():
  for lang in LANGS:
    corpora.install(libreoffice.corpus_name(lang), log=lambda _: None)


@pytest.fixture(scope="module")
def small(installed):
  return xling.build(SMALL)


# ------------------------------------------------------------------------------------------ parser
def test_parser_on_fixture_page():
  assert libreoffice.parse_paragraphs(FIXTURE.read_text(encoding="utf-8")) == [
    ("hd_id701641581066778", "h1", "Find Toolbar"),
    ("par_id3147762", "p", "Use the Find toolbar to search & replace <text> quickly\u2026"),
    ("par_id211641581251728", "p", "Press Ctrl+F. Then type."),  # default variant of the MAC/default switch
    ("hd_id271641582528169", "h2", "Formatted Display"),  # a switch around a paragraph does not hide it
    ("par_id351642423451259", "p", "Find Previous"),  # icon-only par_id851642423451259 dropped, script dropped
    ("par_id100", "p", "Cell one"),
    ("par_id101", "p", "Caf\u00e9 two"),  # NFC
    ("par_id200", "p", "Choose Table - Insert, then press Enter."),  # first variant; nested switch; hidden span
    ("hd_id42", "h3", "Embedded A"),
    ("hd_id42~2", "h3", "Embedded B"),
  ]


def test_build_documents_from_package_layout(tmp_path):
  page = tmp_path / libreoffice.HELP_ROOT / "en-US" / "text" / "shared" / "find.html"
  page.parent.mkdir(parents=True)
  page.write_text(FIXTURE.read_text(encoding="utf-8"), encoding="utf-8")
  (tmp_path / libreoffice.HELP_ROOT / "media").mkdir()  # shared folder without text/: not a language
  docs = libreoffice.build_documents(tmp_path, "en-us")
  assert len(docs) == 10
  assert docs[2] == {
    "id": "text/shared/find.html#par_id211641581251728",
    "file": "text/shared/find.html",
    "par": "par_id211641581251728",
    "tag": "p",
    "lang": "en-us",
    "text": "Press Ctrl+F. Then type.",
  }


def test_language_dir_prefers_the_named_language(tmp_path):
  for name in ("ca", "ca-valencia"):  # as in libreoffice-help-ca
    (tmp_path / libreoffice.HELP_ROOT / name / "text").mkdir(parents=True)
  assert libreoffice.language_dir(tmp_path, "ca").name == "ca"
  with pytest.raises(corpora.CorpusError, match=r"found \['ca', 'ca-valencia'\]"):
    libreoffice.language_dir(tmp_path, "de")


def test_language_dir_missing(tmp_path):
  with pytest.raises(corpora.CorpusError, match="expected a language folder .de. with text"):
    libreoffice.build_documents(tmp_path, "de")


def test_all_34_languages_registered():
  assert len(libreoffice.LANGS) == 34
  for lang in libreoffice.LANGS:
    package = "libreoffice-help-ca" if lang == "ca-valencia" else f"libreoffice-help-{lang}"
    assert corpora.get(f"libreoffice-help-{lang}").source == f"deb:{package}"
  with pytest.raises(corpora.CorpusError, match="unknown corpus 'libreoffice-help-sk'"):
    corpora.get("libreoffice-help-sk")  # bookworm's package is a symlink to the Czech help


# ------------------------------------------------------------------------------------------ corpora
def test_corpus_facts(installed):
  table = libreoffice.paragraphs("en-us")
  assert len(table) == corpora.manifest("libreoffice-help-en-us")["documents"] > 60_000  # ids unique
  assert len({d["file"] for d in table.values()}) > 2000
  for i, d in table.items():
    assert i == d["id"] == f"{d['file']}#{d['par']}" and d["file"].startswith("text/") and d["lang"] == "en-us"
    assert d["text"] and d["text"] == " ".join(d["text"].split())
  assert {d["tag"] for d in table.values()} >= {"p", "h1", "h2"}
  # <span class="switchinline"> MAC: Command | default: Ctrl </span><span> + F</span> in the package's HTML
  want = "Use the shortcut Ctrl + F to quickly open the Find toolbar."
  assert table["text/shared/find_toolbar.html#par_id211641581251728"]["text"] == want


def test_ids_align_across_languages(installed):
  tables = {lang: libreoffice.paragraphs(lang) for lang in LANGS}
  common = set.intersection(*(set(t) for t in tables.values()))
  assert len(common) > 0.99 * max(len(t) for t in tables.values())
  rows = libreoffice.aligned(LANGS)
  assert [i for i, _ in rows] == sorted(common)
  i, texts = rows[0]
  assert texts == tuple(tables[lang][i]["text"] for lang in LANGS)


# ---------------------------------------------------------------------------------------------- xling
def test_shapes_dtypes(small):
  assert (small.kind, small.num_classes, small.baseline, small.seq_len) == ("match", 0, 0.0, 32)
  assert small.card["sizes"] == {"train": 600, "val": 120, "test": 120}
  for split, n in small.card["sizes"].items():
    arrays = small.splits[split]
    assert set(arrays) == {"tokens", "lengths", "tokens_b", "lengths_b"}
    for side in ("", "_b"):
      tokens, lengths = arrays["tokens" + side], arrays["lengths" + side]
      assert tokens.shape == (n, 32) and tokens.dtype == np.int32 and lengths.dtype == np.int32
      assert not tokens.flags.writeable
      assert (tokens[:, 0] == tokenizer.CLS).all() and (lengths >= 2).all() and (lengths <= 32).all()
      col = np.arange(32)
      assert ((tokens != 0) == (col < lengths[:, None])).all()
      assert tokens.max() < small.vocab_size


def test_rows_are_translations_sharing_an_id(small):
  chosen, _ = xling.examples(SMALL)
  tok = xling.tokenizer_for(SMALL)
  en, de = libreoffice.paragraphs("en-us"), libreoffice.paragraphs("de")
  for split, rows in chosen.items():
    for r, p in enumerate(rows):
      assert (p["a"], p["b"]) == (en[p["id"]]["text"], de[p["id"]]["text"])
      for side, text in (("tokens", p["a"]), ("tokens_b", p["b"])):
        want = [tokenizer.CLS, *tok.encode(text)][:32]
        assert small.splits[split][side][r, : len(want)].tolist() == want


def test_split_disjoint_by_file_and_filters(small):
  chosen, counts = xling.examples(SMALL)
  files = {s: {p["file"] for p in rows} for s, rows in chosen.items()}
  assert not (files["train"] & files["val"] or files["train"] & files["test"] or files["val"] & files["test"])
  for side in ("a", "b"):
    texts = [p[side] for rows in chosen.values() for p in rows]
    assert len(set(texts)) == len(texts)
  for split, rows in chosen.items():
    for p in rows:
      assert xling.file_split(p["file"]) == split == p["split"]
      assert p["a"] != p["b"] and min(len(p["a"]), len(p["b"])) >= SMALL.min_chars
  assert counts["dropped_short"] > 0 and counts["dropped_identical"] > 0 and counts["dropped_duplicate"] > 0


def test_deterministic_and_seeded(small):
  xling.build.cache_clear()
  xling.examples.cache_clear()
  again = xling.build(SMALL)
  assert again is not small
  for split in small.splits:
    for key, array in small.splits[split].items():
      np.testing.assert_array_equal(array, again.splits[split][key])
  other, _ = xling.examples(dataclasses.replace(SMALL, seed=1))
  mine, _ = xling.examples(SMALL)
  assert [p["id"] for p in other["test"]] != [p["id"] for p in mine["test"]]
  assert {xling.file_split(p["file"]) for p in other["test"]} == {"test"}


def test_registry_build(small):
  task = tasks.build(
    "xling",
    {"pair": ["en-us", "de"], "vocab_size": 1000, "max_len": 32, "num_train": 600, "num_val": 120, "num_test": 120},
  )
  assert task is xling.build(SMALL)
  np.testing.assert_array_equal(task.splits["val"]["tokens_b"], small.splits["val"]["tokens_b"])


def test_multilingual_tokenizer_round_trips(installed):
  tok = xling.train_multilingual_tokenizer(LANGS, 2000, per_lang=1500)
  assert tok.vocab_size == 2000
  for text in (
    "Opens the Find & Replace dialog.",
    "Öffnet den Dialog Suchen und ersetzen.",
    "Ouvre la boîte de dialogue Rechercher et remplacer.",
    "Zeichen: ß, ü; caractères: ç, œ, é",
  ):
    ids = tok.encode(text)
    assert tokenizer.UNK not in ids and tok.decode(ids) == text


def test_unknown_language():
  with pytest.raises(ValueError, match=r"^pair=\(.en-us., .xx.\): unknown LibreOffice help language .xx."):
    xling.Config(pair=("en-us", "xx"))
  with pytest.raises(ValueError, match="'xx'"):
    xling.train_multilingual_tokenizer(("de", "xx"), 1000)
  with pytest.raises(ValueError, match="'klingon'"):
    libreoffice.paragraphs("klingon")
  with pytest.raises(ValueError, match="'sk' has no text of its own: .*symlink help/sk -> cs"):
    xling.Config(pair=("sk", "de"))


@pytest.mark.parametrize(
  "field, value",
  [
    ("pair", ("de", "de")),
    ("pair", ("de",)),
    ("vocab_size", 10),
    ("max_len", 1),
    ("min_chars", -1),
    ("num_val", 0),
    ("seed", -2),
    ("num_train", 2.5),
  ],
)
def test_config_validation(field, value):
  with pytest.raises(ValueError, match=f"^{field}="):
    xling.Config(**{field: value})


def test_missing_corpus_names_install_command(tmp_path, monkeypatch):
  monkeypatch.setenv(corpora.DATA_ENV, str(tmp_path))
  with pytest.raises(corpora.CorpusError, match="research data install libreoffice-help-ja"):
    xling.build(dataclasses.replace(SMALL, pair=("ja", "ko")))
