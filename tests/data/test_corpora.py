"""The corpora installer: registry, atomic install, manifest, clear errors for missing corpora/packages/lists."""

import json
from pathlib import Path

import pytest

from research import cli
from research.data import corpora


@pytest.fixture
def fake_corpus(tmp_path, monkeypatch):
  monkeypatch.setenv(corpora.DATA_ENV, str(tmp_path / "data"))
  calls = []

  def fetch(source, dest):
    calls.append(source)
    (dest / "root").mkdir(parents=True)
    (dest / "pkg.deb").write_bytes(b"x" * 1000)
    (dest / "root" / "a.txt").write_text("alpha beta\ngamma")
    return dest / "root"

  def build(raw: Path):
    if (raw / "a.txt").read_text() == "":
      return []
    return [{"id": "a", "text": (raw / "a.txt").read_text()}, {"id": "b", "text": "δ"}]

  monkeypatch.setattr(corpora, "fetch", fetch)
  corpus = corpora.Corpus("fake-test", "deb:fake", "a test corpus", build)
  monkeypatch.setitem(corpora._REGISTRY, "fake-test", corpus)
  return calls


def test_install_writes_documents_and_manifest_once(fake_corpus, capsys):
  with pytest.raises(corpora.CorpusError, match="research data install fake-test"):
    corpora.read("fake-test")
  info = corpora.install("fake-test")
  assert info["documents"] == 2 and info["text_bytes"] == len("alpha beta\ngamma") + len("δ".encode())
  assert info["package_bytes"] == 1000
  assert corpora.read("fake-test") == [{"id": "a", "text": "alpha beta\ngamma"}, {"id": "b", "text": "δ"}]
  assert json.loads((corpora.corpus_dir("fake-test") / "manifest.json").read_text())["source"] == "deb:fake"
  corpora.install("fake-test")  # idempotent: nothing fetched again
  assert fake_corpus == ["deb:fake"]
  row = next(r for r in corpora.listing() if r["name"] == "fake-test")
  assert row["installed"] and row["documents"] == 2
  assert "2 documents" in capsys.readouterr().out


def test_failed_build_leaves_nothing_behind(fake_corpus, monkeypatch):
  def broken(raw):
    raise RuntimeError("parser bug")

  monkeypatch.setitem(corpora._REGISTRY, "fake-test", corpora.Corpus("fake-test", "deb:fake", "", broken))
  with pytest.raises(RuntimeError, match="parser bug"):
    corpora.install("fake-test")
  parent = corpora.corpus_dir("fake-test").parent
  assert not corpora.installed("fake-test") and list(parent.iterdir()) == []


def test_missing_apt_lists_name_apt_get_update(tmp_path, monkeypatch):
  monkeypatch.setattr(corpora, "APT_LISTS", tmp_path / "no-lists")
  with pytest.raises(corpora.CorpusError, match=r"apt-get update.*as root"):
    corpora.fetch_deb("wordnet-base", tmp_path / "dl")


def test_missing_debian_package_is_named(tmp_path):
  with pytest.raises(corpora.CorpusError, match="no-such-package-xyz"):
    corpora.fetch_deb("no-such-package-xyz", tmp_path / "dl")


def test_cli_data_errors_are_one_line(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv(corpora.DATA_ENV, str(tmp_path))
  assert cli.main(["data", "install", "linux-doc", "nope"]) == 2  # every name checked before any fetch
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "unknown corpus 'nope'" in err and not (tmp_path / "corpora").exists()
  assert cli.main(["data", "tokenizer", "--corpus", "wordnet", "--out", str(tmp_path / "m.model")]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "research data install wordnet" in err
  assert cli.main(["data", "card", "nope"]) == 2
  assert "unknown task 'nope'" in capsys.readouterr().err


def test_cli_list_shows_every_corpus(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv(corpora.DATA_ENV, str(tmp_path))
  assert cli.main(["data", "list"]) == 0
  out = capsys.readouterr().out
  for name in corpora.names():
    assert name in out
  assert len(corpora.names()) == 2 + 2 + 34  # linux/python docs, wordnet + vader, 34 LibreOffice languages
