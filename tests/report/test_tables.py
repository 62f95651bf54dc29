"""Report tables: aggregation numbers, markdown formatting, error messages, and the written artefacts."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from research.report import tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(variant: str, seed: int, test: float, *, params: int = 123456, tps: float = 1000.0,
         mem_mib: float = 3.0, wall: float = 10.0, val: float = 0.5, base: float = 0.1, task: str = "listops",
         curve: list | None = None) -> dict:
  return {
    "variant": variant, "seed": seed, "task": task, "params": params, "test_accuracy": test,
    "val_accuracy": val, "best_step": 200, "tokens_per_s": tps, "compiled_memory_bytes": int(mem_mib * 2**20),
    "wall_s": wall, "majority_baseline": base, "num_steps": 300, "seq_len": 129,
    "curve": curve if curve is not None else [[100, 0.2 + seed / 100], [200, 0.3], [300, val]],
  }


@pytest.fixture
def runs() -> list[dict]:
  return [
    _run("softmax", 0, 0.40, params=123456, tps=1000.0, mem_mib=3.0, wall=10.0, val=0.41),
    _run("linear", 0, 0.35, params=99000, tps=2000.0, mem_mib=1.0, wall=5.0, val=0.36),
    _run("softmax", 1, 0.42, params=123456, tps=1200.0, mem_mib=5.0, wall=12.0, val=0.43),
    _run("linear", 1, 0.38, params=99000, tps=2400.0, mem_mib=2.0, wall=6.0, val=0.37),
    _run("performer", 0, 0.30, params=1234567, tps=1500.0, mem_mib=1.5, wall=7.0, val=0.31),
  ]


def test_aggregate_numbers_match_numpy(runs):
  rows = tables.aggregate(runs)
  assert [r["variant"] for r in rows] == ["softmax", "linear", "performer"]  # first-seen order
  by = {r["variant"]: r for r in rows}
  for variant in ("softmax", "linear"):
    mine = [s for s in runs if s["variant"] == variant]
    r = by[variant]
    assert r["n_seeds"] == 2 and r["seeds"] == [0, 1] and r["std_defined"] is True
    test = np.array([s["test_accuracy"] for s in mine])
    tps = np.array([s["tokens_per_s"] for s in mine])
    np.testing.assert_allclose(r["test_accuracy_mean"], test.mean(), rtol=1e-12)
    np.testing.assert_allclose(r["test_accuracy_std"], test.std(ddof=1), rtol=1e-12)
    np.testing.assert_allclose(r["val_accuracy_mean"], np.mean([s["val_accuracy"] for s in mine]), rtol=1e-12)
    np.testing.assert_allclose(r["tokens_per_s_mean"], tps.mean(), rtol=1e-12)
    np.testing.assert_allclose(r["tokens_per_s_std"], tps.std(ddof=1), rtol=1e-12)
    np.testing.assert_allclose(r["wall_s_mean"], np.mean([s["wall_s"] for s in mine]), rtol=1e-12)
    assert r["majority_baseline"] == 0.1
  # Hand-computed: sample std of (0.40, 0.42) is 0.02/sqrt(2); of (1000, 1200) is 200/sqrt(2).
  assert by["softmax"]["test_accuracy_std"] == pytest.approx(0.02 / math.sqrt(2), rel=1e-9)
  assert by["softmax"]["tokens_per_s_std"] == pytest.approx(200 / math.sqrt(2), rel=1e-9)
  assert by["softmax"]["compiled_memory_mib"] == pytest.approx(4.0)  # mean of 3 MiB and 5 MiB
  assert by["linear"]["compiled_memory_mib"] == pytest.approx(1.5)
  assert by["softmax"]["params"] == 123456


def test_aggregate_single_seed(runs):
  (r,) = [r for r in tables.aggregate(runs) if r["variant"] == "performer"]
  assert r["n_seeds"] == 1 and r["seeds"] == [0]
  assert r["test_accuracy_std"] == 0.0 and r["tokens_per_s_std"] == 0.0
  assert r["std_defined"] is False
  assert r["test_accuracy_mean"] == pytest.approx(0.30)


def test_markdown_exact_formatting(runs):
  md = tables.markdown_table(tables.aggregate(runs), title="ListOps compare",
                             notes=["device: 1x H100", "compiled memory = XLA temp+argument+output bytes"])
  lines = md.splitlines()
  assert lines[0] == "## ListOps compare"
  assert ("| variant | params | test acc (mean ± std, n seeds) | val acc | tokens/s | compiled memory (MiB) "
          "| wall (s) |") in lines
  # softmax: test 41.0 ± 1.4 (0.02/sqrt2 = 1.414%), val 42.0, tokens 1,100 ± 141, mem 4.0, wall 11.0
  assert "| softmax | 123,456 | 41.0 ± 1.4 (2 seeds) | 42.0 | 1,100 ± 141 | 4.0 | 11.0 |" in lines
  # linear: test mean 36.5, std 0.03/sqrt2 = 2.1%; tokens 2,200 ± 283 (400/sqrt2 = 282.8)
  assert "| linear | 99,000 | 36.5 ± 2.1 (2 seeds) | 36.5 | 2,200 ± 283 | 1.5 | 5.5 |" in lines
  assert "| performer | 1,234,567 | 30.0 (1 seed) | 31.0 | 1,500 | 1.5 | 7.0 |" in lines
  assert "Majority-class baseline (test split): 10.0%." in lines
  assert lines[-2:] == ["- device: 1x H100", "- compiled memory = XLA temp+argument+output bytes"]
  # Table rows come in variant order, directly after the header separator.
  sep = next(i for i, ln in enumerate(lines) if ln.startswith("|---"))
  assert [ln.split("|")[1].strip() for ln in lines[sep + 1:sep + 4]] == ["softmax", "linear", "performer"]


def test_params_mismatch_names_variant(runs):
  runs[2]["params"] = 123457
  with pytest.raises(ValueError, match="'softmax'.*params"):
    tables.aggregate(runs)


def test_baseline_mismatch_and_duplicate_seed_rejected(runs):
  bad = [dict(s) for s in runs]
  bad[4]["majority_baseline"] = 0.2
  with pytest.raises(ValueError, match="majority_baseline"):
    tables.aggregate(bad)
  with pytest.raises(ValueError, match="seed 0 appears more than once"):
    tables.aggregate(runs + [_run("linear", 0, 0.5)])
  with pytest.raises(ValueError, match="no summaries"):
    tables.aggregate([])


def _write(workdir: Path, payload) -> Path:
  workdir.mkdir(parents=True)
  (workdir / "summary.json").write_text(payload if isinstance(payload, str) else json.dumps(payload))
  return workdir


def test_load_summaries_roundtrip_and_errors(tmp_path, runs):
  dirs = [_write(tmp_path / f"run{i}", s) for i, s in enumerate(runs)]
  assert tables.load_summaries(dirs) == runs

  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match=re.escape(str(empty / "summary.json"))):
    tables.load_summaries([dirs[0], empty])

  broken = _write(tmp_path / "broken", "{not json")
  with pytest.raises(ValueError, match=re.escape(str(broken / "summary.json")) + ".*not valid JSON"):
    tables.load_summaries([broken])

  partial = dict(runs[0])
  del partial["test_accuracy"]
  incomplete = _write(tmp_path / "incomplete", partial)
  with pytest.raises(ValueError, match=re.escape(str(incomplete / "summary.json")) + ".*test_accuracy"):
    tables.load_summaries([incomplete])

  not_obj = _write(tmp_path / "list", [1, 2])
  with pytest.raises(ValueError, match=re.escape(str(not_obj / "summary.json")) + ".*JSON object"):
    tables.load_summaries([not_obj])


def test_write_report_artifacts(tmp_path, runs):
  out = tmp_path / "reports" / "nested"
  paths = tables.write_report(runs, out, "listops", title="ListOps", notes=["device: cpu"])
  assert set(paths) == {"md", "json", "png"}
  assert paths["md"] == out / "listops.md" and paths["png"] == out / "listops.png"

  png = paths["png"].read_bytes()
  assert len(png) > 1000 and png[:8] == PNG_MAGIC

  assert paths["md"].read_text() == tables.markdown_table(tables.aggregate(runs), title="ListOps",
                                                          notes=["device: cpu"])
  text = paths["json"].read_text()
  data = json.loads(text)
  assert data == {"title": "ListOps", "notes": ["device: cpu"], "rows": tables.aggregate(runs), "runs": runs}
  assert text == json.dumps(data, sort_keys=True, indent=2) + "\n"  # sorted keys, indent 2
