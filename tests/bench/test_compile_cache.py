"""--compile-cache: the first process writes every compiled program, a second identical one writes nothing new."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from research import compile_cache
from tests.train.common import TINY

REPO = Path(__file__).resolve().parents[2]


def _bench(cache: Path, out: Path) -> subprocess.CompletedProcess:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  cmd = [
    sys.executable,
    "-m",
    "research.cli",
    "--compile-cache",
    str(cache),
    "bench",
    "train",
    "--config",
    f"experiments/listops.py:{TINY}",
    "--steps",
    "1",
    "--warmup",
    "0",
    "--out",
    str(out),
  ]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_second_process_hits_the_cache(tmp_path):
  cache = tmp_path / "cache"
  first = _bench(cache, tmp_path / "a")
  assert first.returncode == 0, first.stderr[-2000:]
  written = compile_cache.entries(cache)
  assert written >= 2  # at least the train step and its initialisation
  second = _bench(cache, tmp_path / "b")
  assert second.returncode == 0, second.stderr[-2000:]
  assert compile_cache.entries(cache) == written  # every program came from the cache


def test_unwritable_cache_is_one_clear_error(tmp_path, capsys):
  from research.cli import main

  blocker = tmp_path / "file"
  blocker.write_text("x")
  rc = main(["--compile-cache", str(blocker / "cache"), "variants"])
  err = capsys.readouterr().err
  assert rc == 2 and "compile cache directory" in err and err.count("\n") == 1
