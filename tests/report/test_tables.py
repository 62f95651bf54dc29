"""Report tables: aggregation numbers per (task, variant, label), markdown / CSV / JSON, error messages."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from research.report import tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_ABSENT = object()


def _run(
  variant: str,
  seed: int,
  test: float,
  *,
  params: int = 123456,
  tps: float | None = 1000.0,
  mem_mib: float = 3.0,
  wall: float = 10.0,
  val: float = 0.5,
  base: float = 0.1,
  task: str = "listops",
  final=_ABSENT,
  curve: list | None = None,
  **extra,
) -> dict:
  s = {
    "variant": variant,
    "seed": seed,
    "task": task,
    "params": params,
    "test_accuracy": test,
    "val_accuracy": val,
    "best_step": 200,
    "tokens_per_s": tps,
    "compiled_memory_bytes": int(mem_mib * 2**20),
    "wall_s": wall,
    "majority_baseline": base,
    "num_steps": 300,
    "seq_len": 129,
    "device": "cpu",
    "curve": curve if curve is not None else [[100, 0.2 + seed / 100], [200, 0.3], [300, val]],
    **extra,
  }
  if final is not _ABSENT:
    s["final_test_accuracy"] = final
  return s


@pytest.fixture
def runs() -> list[dict]:
  return [
    _run("softmax", 0, 0.40, tps=1000.0, mem_mib=3.0, wall=10.0, val=0.41, final=0.39, lr=1e-3),
    _run("linear", 0, 0.35, params=99000, tps=2000.0, mem_mib=1.0, wall=5.0, val=0.36, final=0.30),
    _run("softmax", 1, 0.42, tps=1200.0, mem_mib=5.0, wall=12.0, val=0.43, final=0.42, lr=1e-3),
    _run("softmax", 0, 0.70, task="pathfinder", base=0.5, val=0.71, final=0.69, seq_len=1025),
    _run("linear", 1, 0.38, params=99000, tps=2400.0, mem_mib=2.0, wall=6.0, val=0.37, final=0.33),
    _run("performer", 0, 0.30, params=1234567, tps=1500.0, mem_mib=1.5, wall=7.0, val=0.31),  # no final
    _run("softmax", 1, 0.74, task="pathfinder", base=0.5, val=0.72, final=0.70, seq_len=1025),
    _run("softmax", 2, 0.78, task="pathfinder", base=0.5, val=0.76, final=0.80, seq_len=1025),
  ]


def test_aggregate_numbers_match_numpy(runs):
  rows = tables.aggregate(runs)
  # Tasks in first-seen order, rows first-seen within a task.
  assert [(r["task"], r["variant"]) for r in rows] == [
    ("listops", "softmax"),
    ("listops", "linear"),
    ("listops", "performer"),
    ("pathfinder", "softmax"),
  ]
  for r in rows:
    mine = [s for s in runs if (s["task"], s["variant"]) == (r["task"], r["variant"])]
    assert r["n_seeds"] == len(mine) and r["seeds"] == [s["seed"] for s in mine] and r["label"] == ""
    for field in ("test_accuracy", "val_accuracy", "tokens_per_s"):
      x = np.array([s[field] for s in mine])
      np.testing.assert_allclose(r[f"{field}_mean"], x.mean(), rtol=1e-12)
      if len(mine) > 1:
        np.testing.assert_allclose(r[f"{field}_std"], x.std(ddof=1), rtol=1e-12)
    np.testing.assert_allclose(r["wall_s_mean"], np.mean([s["wall_s"] for s in mine]), rtol=1e-12)
    np.testing.assert_allclose(r["wall_s_total"], np.sum([s["wall_s"] for s in mine]), rtol=1e-12)
    assert r["num_steps"] == 300 and r["device"] == "cpu"
  by = {(r["task"], r["variant"]): r for r in rows}
  sm, pf = by["listops", "softmax"], by["pathfinder", "softmax"]
  # Hand-computed: sample std of (0.40, 0.42) is 0.02/sqrt(2); of (1000, 1200) is 200/sqrt(2).
  assert sm["test_accuracy_std"] == pytest.approx(0.02 / math.sqrt(2), rel=1e-9)
  assert sm["tokens_per_s_std"] == pytest.approx(200 / math.sqrt(2), rel=1e-9)
  assert sm["final_test_accuracy_mean"] == pytest.approx(0.405) and sm["final_n_seeds"] == 2
  assert sm["final_test_accuracy_std"] == pytest.approx(0.03 / math.sqrt(2), rel=1e-9)
  assert sm["compiled_memory_mib"] == pytest.approx(4.0)  # mean of 3 MiB and 5 MiB
  assert sm["lr"] == 1e-3 and by["listops", "linear"]["lr"] is None
  assert sm["majority_baseline"] == 0.1 and pf["majority_baseline"] == 0.5
  # Pathfinder: three seeds, test (0.70, 0.74, 0.78): mean 0.74, sample std 0.04; final (0.69, 0.70, 0.80).
  assert pf["test_accuracy_mean"] == pytest.approx(0.74) and pf["test_accuracy_std"] == pytest.approx(0.04)
  assert pf["final_test_accuracy_std"] == pytest.approx(np.std([0.69, 0.70, 0.80], ddof=1), rel=1e-12)
  assert pf["seq_len"] == 1025 and sm["seq_len"] == 129


def test_single_seed_and_missing_final(runs):
  r = next(r for r in tables.aggregate(runs) if r["variant"] == "performer")
  assert r["n_seeds"] == 1 and r["seeds"] == [0]
  assert r["test_accuracy_std"] is None and r["tokens_per_s_std"] is None and r["val_accuracy_std"] is None
  assert r["test_accuracy_mean"] == pytest.approx(0.30)
  assert r["final_test_accuracy_mean"] is None and r["final_test_accuracy_std"] is None and r["final_n_seeds"] == 0
  # Partly missing (a sweep resumed across the summary change): mean over the seeds that have it, n shown.
  mixed = [_run("softmax", 0, 0.4, final=0.3), _run("softmax", 1, 0.5), _run("softmax", 2, 0.6, final=None)]
  (row,) = tables.aggregate(mixed)
  assert row["final_test_accuracy_mean"] == pytest.approx(0.3) and row["final_n_seeds"] == 1
  assert "| 50.0 ± 10.0 (3) | 30.0 (1) |" in tables.markdown_table([row], title="t")


def test_labels_make_rows_and_tokens_none():
  runs = [
    _run("linear", s, 0.3 + s / 10, label=f"model.d_model={d}", params=d * 100, tps=None)
    for d in (32, 64)
    for s in (0, 1)
  ]
  rows = tables.aggregate(runs)
  assert [(r["label"], r["n_seeds"], r["params"]) for r in rows] == [
    ("model.d_model=32", 2, 3200),
    ("model.d_model=64", 2, 6400),
  ]
  assert rows[0]["tokens_per_s_mean"] is None
  md = tables.markdown_table(rows, title="width").splitlines()
  assert md[2].startswith("| task | variant | label | params |")
  assert md[3] == "|---|---|---|" + "|".join(["---:"] * 10) + "|"
  assert "| listops | linear | model.d_model=64 | 6,400 | 35.0 ± 7.1 (2) | — | 50.0 ± 0.0 | — |" in md[5]


def test_labels_from_sweep_overrides():
  # research/sweep.py:summaries() attaches the set-combination as an "overrides" object: rows split on it.
  runs = [
    _run("linear", s, 0.3, overrides={"data.num_kv": kv, "model.attention": "linear"}, lr=1e-3)
    for kv in (4, 8)
    for s in (0, 1)
  ]
  runs.append(_run("linear", 0, 0.3, overrides=[["data.num_kv", 16]], label="kv16"))  # an explicit label wins
  assert [(r["label"], r["n_seeds"]) for r in tables.aggregate(runs)] == [
    ("data.num_kv=4", 2),
    ("data.num_kv=8", 2),
    ("kv16", 1),
  ]
  with pytest.raises(ValueError, match="override 3 should be"):
    tables.aggregate([_run("linear", 0, 0.3, overrides=[3])])


def test_markdown_exact_formatting(runs):
  md = tables.markdown_table(
    tables.aggregate(runs),
    title="LRA tiny",
    notes=["device: 1x H100", "compiled memory = XLA temp+argument+output bytes"],
  )
  lines = md.splitlines()
  assert lines[0] == "## LRA tiny"
  assert lines[2] == (
    "| task | variant | params | test acc, best val (mean ± std, n) | test acc, final | val acc "
    "| tokens/s | compiled memory (MiB) | wall (s) | steps | LR | majority |"
  )
  # softmax: test 41.0 ± 1.4 (0.02/sqrt2 = 1.414%), final 40.5 ± 2.1, val 42.0 ± 1.4, tokens 1,100 ± 141
  assert lines[4] == (
    "| listops | softmax | 123,456 | 41.0 ± 1.4 (2) | 40.5 ± 2.1 | 42.0 ± 1.4 | 1,100 ± 141 | 4.0 "
    "| 11.0 | 300 | 0.001 | 10.0 |"
  )
  assert lines[5] == (
    "| listops | linear | 99,000 | 36.5 ± 2.1 (2) | 31.5 ± 2.1 | 36.5 ± 0.7 | 2,200 ± 283 | 1.5 "
    "| 5.5 | 300 | — | 10.0 |"
  )
  assert lines[6] == "| listops | performer | 1,234,567 | 30.0 (1) | — | 31.0 | 1,500 | 1.5 | 7.0 | 300 | — | 10.0 |"
  assert lines[7].startswith("| pathfinder | softmax | 123,456 | 74.0 ± 4.0 (3) | 73.0 ± 6.1 | 73.0 ± 2.6 |")
  assert lines[7].endswith("| 50.0 |")
  assert lines[-2:] == ["- device: 1x H100", "- compiled memory = XLA temp+argument+output bytes"]


def test_mismatches_name_the_row(runs):
  bad = [dict(s) for s in runs]
  bad[2]["params"] = 123457
  with pytest.raises(ValueError, match="'listops' variant 'softmax'.*params differs"):
    tables.aggregate(bad)
  bad = [dict(s) for s in runs]
  bad[2]["lr"] = 3e-3
  with pytest.raises(ValueError, match="'softmax'.*lr differs.*seed 0: 0.001, seed 1: 0.003"):
    tables.aggregate(bad)
  bad = [dict(s) for s in runs]
  bad[5]["majority_baseline"] = 0.2
  with pytest.raises(ValueError, match="'listops': majority_baseline disagrees.*variant='performer'"):
    tables.aggregate(bad)
  with pytest.raises(ValueError, match="variant='linear' seed=0: seed 0 appears more than once"):
    tables.aggregate(runs + [_run("linear", 0, 0.5, params=99000)])
  with pytest.raises(ValueError, match="no summaries"):
    tables.aggregate([])
  with pytest.raises(ValueError, match="field 'final_test_accuracy' should be int or float or null"):
    tables.aggregate([_run("softmax", 0, 0.4, final="0.3")])


def test_csv_parses_back_to_the_rows(tmp_path, runs):
  rows = tables.aggregate(runs + [_run("linear", 0, 0.3, label='a|b, "q"', params=1)])
  path = tables.write_csv(rows, tmp_path / "t.csv")
  assert path.read_text().splitlines()[0] == ",".join(tables.CSV_FIELDS)
  back = tables.read_csv(path)
  assert back == [{k: r[k] for k in tables.CSV_FIELDS} for r in rows]
  assert back[2]["test_accuracy_std"] is None and back[2]["seeds"] == [0]  # undefined std -> empty cell
  assert [r["label"] for r in back if r["params"] == 1] == ['a|b, "q"']


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
  paths = tables.write_report(runs, out, "lra", title="LRA", notes=["device: cpu"])
  assert set(paths) == {"md", "csv", "json", "accuracy", "curves"}  # one length per task: no scaling figure
  assert paths["md"] == out / "lra.md" and paths["accuracy"] == out / "lra_accuracy.png"
  for key in ("accuracy", "curves"):
    png = paths[key].read_bytes()
    assert len(png) > 1000 and png[:8] == PNG_MAGIC

  rows = tables.aggregate(runs)
  assert paths["md"].read_text() == tables.markdown_table(rows, title="LRA", notes=["device: cpu"])
  assert tables.read_csv(paths["csv"]) == [{k: r[k] for k in tables.CSV_FIELDS} for r in rows]
  text = paths["json"].read_text()
  data = json.loads(text)
  assert data == {"title": "LRA", "notes": ["device: cpu"], "rows": rows, "runs": runs}
  assert text == json.dumps(data, sort_keys=True, indent=2) + "\n"  # sorted keys, indent 2

  assert set(tables.write_report(runs, tmp_path / "plain", "x", title="x", figures=False)) == {"md", "csv", "json"}
