"""Rebuilding reports from workdirs alone: discovery, provenance LR, sweep labels, LR selection, rebuild()."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from research.report import runs as report_runs
from research.report import tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _summary(
  variant: str,
  seed: int,
  *,
  task: str = "listops",
  val: float = 0.5,
  test: float = 0.4,
  seq_len: int = 129,
  base: float = 0.1,
) -> dict:
  return {
    "variant": variant,
    "seed": seed,
    "task": task,
    "kind": "classify",
    "params": 5000,
    "test_accuracy": test,
    "final_test_accuracy": test - 0.01,
    "val_accuracy": val,
    "best_step": 20,
    "num_steps": 20,
    "tokens_per_s": 1e6 / seq_len,
    "compiled_memory_bytes": seq_len * 2**16,
    "wall_s": 30.0,
    "majority_baseline": base,
    "seq_len": seq_len,
    "curve": [[10, val - 0.1], [20, val]],
    "device": "cpu",
  }


def _workdir(root: Path, rel: str, summary: dict | str | None, lr: float | None = None) -> Path:
  workdir = root / rel
  workdir.mkdir(parents=True)
  if summary is not None:
    (workdir / "summary.json").write_text(summary if isinstance(summary, str) else json.dumps(summary))
  if lr is not None:
    config = {"task": "listops", "seed": 0, "train": {"learning_rate": lr, "num_steps": 20}}
    (workdir / "provenance.json").write_text(json.dumps({"config": config, "git_sha": "abc"}))
  return workdir


def test_find_summaries_attaches_workdir_lr_and_sweep_labels(tmp_path):
  _workdir(tmp_path, "b/softmax-seed0", _summary("softmax", 0), lr=1e-3)
  _workdir(tmp_path, "a/linear-seed0", _summary("linear", 0))
  _workdir(tmp_path, "a/linear-seed0/checkpoints", None)  # directories without a summary are ignored
  _workdir(tmp_path, "sweep/w32", _summary("linear", 0), lr=3e-4)
  _workdir(tmp_path, "sweep/w64", _summary("linear", 0), lr=3e-4)
  sweep = {
    "runs": [
      {"name": "w64", "variant": "linear", "seed": 0, "overrides": [["model.d_model", 64], ["seed", 0]]},
      {"summary_path": "w32/summary.json", "overrides": {"model.d_model": 32, "model.attention": "linear"}},
    ]
  }
  (tmp_path / "sweep" / "sweep.json").write_text(json.dumps(sweep))

  found = report_runs.find_summaries(tmp_path)
  # Sweep-listed runs first in sweep order, then the rest in path order.
  assert [s["workdir"] for s in found] == ["sweep/w64", "sweep/w32", "a/linear-seed0", "b/softmax-seed0"]
  assert [s.get("label") for s in found] == ["model.d_model=64", "model.d_model=32", None, None]
  assert [s.get("lr") for s in found] == [3e-4, 3e-4, None, 1e-3]
  assert [(r["variant"], r["label"]) for r in tables.aggregate(found)] == [
    ("linear", "model.d_model=64"),
    ("linear", "model.d_model=32"),
    ("linear", ""),
    ("softmax", ""),
  ]


def test_malformed_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    report_runs.find_summaries(tmp_path / "nowhere")
  _workdir(tmp_path, "ok", _summary("softmax", 0))
  bad = _workdir(tmp_path, "x/bad", "{oops")
  with pytest.raises(ValueError, match=re.escape(str(bad / "summary.json")) + ".*cannot be read as JSON"):
    report_runs.find_summaries(tmp_path)
  partial = _summary("softmax", 1)
  del partial["val_accuracy"]
  (bad / "summary.json").write_text(json.dumps(partial))
  with pytest.raises(ValueError, match=re.escape(str(bad / "summary.json")) + ".*malformed.*val_accuracy"):
    report_runs.rebuild(tmp_path, tmp_path / "out", "r")
  (bad / "summary.json").write_text(json.dumps(_summary("softmax", 1)))
  (bad / "provenance.json").write_text("[")
  with pytest.raises(ValueError, match=re.escape(str(bad / "provenance.json"))):
    report_runs.find_summaries(tmp_path)
  (bad / "provenance.json").unlink()
  (tmp_path / "sweep.json").write_text(json.dumps({"runs": 3}))
  with pytest.raises(ValueError, match=re.escape(str(tmp_path / "sweep.json")) + ".*'runs' list"):
    report_runs.find_summaries(tmp_path)
  (tmp_path / "sweep.json").unlink()
  assert len(report_runs.find_summaries(tmp_path)) == 2
  with pytest.raises(ValueError, match="no summary.json found"):
    report_runs.rebuild(_workdir(tmp_path, "empty", None), tmp_path / "o", "r")


def test_select_lr_on_validation():
  runs = []
  for lr, val in ((1e-4, 0.30), (3e-4, 0.45), (1e-3, 0.45), (3e-3, 0.20)):  # tie: smaller rate wins
    runs.append({**_summary("softmax", 0, val=val), "lr": lr})
  runs += [{**_summary("softmax", s, val=0.1), "lr": 3e-4} for s in (1, 2)]  # stage 2 at the chosen rate
  runs += [{**_summary("linear", s), "lr": 1e-3} for s in (0, 1)]  # one rate: untouched
  kept, notes = report_runs.select_lr(runs)
  assert [(s["variant"], s["seed"], s["lr"]) for s in kept] == [
    ("softmax", 0, 3e-4),
    ("softmax", 1, 3e-4),
    ("softmax", 2, 3e-4),
    ("linear", 0, 1e-3),
    ("linear", 1, 1e-3),
  ]
  assert notes == [
    "listops softmax: LR on validation accuracy (seed 0): 0.0001 → 30.0, 0.0003 → 45.0 (chosen), "
    "0.001 → 45.0, 0.003 → 20.0"
  ]
  rows = tables.aggregate(kept)
  assert [(r["variant"], r["n_seeds"], r["lr"]) for r in rows] == [("softmax", 3, 3e-4), ("linear", 2, 1e-3)]


def test_rebuild_writes_every_file(tmp_path):
  runs_dir = tmp_path / "runs"
  for task, base in (("listops", 0.1), ("pathfinder", 0.5)):
    for variant in ("softmax", "linear"):
      for seed in range(2):
        _workdir(
          runs_dir,
          f"{task}/{variant}-seed{seed}",
          _summary(variant, seed, task=task, base=base, test=0.4 + seed / 10),
          lr=1e-3,
        )
      for n in (256, 512):  # a length sweep for the scaling figure
        _workdir(
          runs_dir,
          f"{task}/len{n}/{variant}",
          {**_summary(variant, 0, task=task, base=base, seq_len=n), "label": f"len={n}"},
        )
  _workdir(runs_dir, "listops/lrsearch", {**_summary("softmax", 0, val=0.2), "label": "", "lr": 1e-2})
  out = tmp_path / "results"
  paths = report_runs.rebuild(runs_dir, out, "lra_tiny")
  assert paths == {
    "md": out / "lra_tiny.md",
    "csv": out / "lra_tiny.csv",
    "json": out / "lra_tiny.json",
    "accuracy": out / "lra_tiny_accuracy.png",
    "curves": out / "lra_tiny_curves.png",
    "scaling": out / "lra_tiny_scaling.png",
    "sweep": out / "lra_tiny_sweep.png",
  }
  for key in ("accuracy", "curves", "scaling"):
    data = paths[key].read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000
  md = paths["md"].read_text()
  assert md.startswith("## lra_tiny: listops, pathfinder\n")
  assert "| listops | softmax |  | 5,000 | 45.0 ± 7.1 (2) | 44.0 ± 7.1 |" in md
  assert "| 20 | 0.001 | 10.0 |" in md
  assert "listops softmax: LR on validation accuracy (seed 0): 0.001 → 50.0 (chosen), 0.01 → 20.0" in md
  assert "17 runs from " in md and "(16 in the table); device: cpu; total wall time 0.14 h (510 s, sum of" in md
  assert "lower bound" not in md
  data = json.loads(paths["json"].read_text())
  assert len(data["runs"]) == 16 and all("workdir" in s for s in data["runs"])
  assert tables.read_csv(paths["csv"]) == [{k: r[k] for k in tables.CSV_FIELDS} for r in data["rows"]]
  assert len(data["rows"]) == 12  # 2 tasks x 2 variants x (1 + 2 length labels)

  only_listops = report_runs.rebuild(runs_dir / "listops" / "softmax-seed0", out, "one", title="One run")
  assert "scaling" not in only_listops and only_listops["md"].read_text().startswith("## One run\n")

  # a run resumed before wall_s accumulated across sittings makes the total a lower bound; one that did does not
  _workdir(runs_dir, "listops/resumed-old", {**_summary("softmax", 3), "resumed_from": 8})
  _workdir(runs_dir, "listops/resumed-new", {**_summary("softmax", 4), "resumed_from": 8, "wall_s_complete": True})
  md = report_runs.rebuild(runs_dir, out, "lra_tiny")["md"].read_text()
  assert "sum of per-run wall_s; a lower bound: of 1 resumed run only the last sitting is counted)" in md


def test_rebuild_includes_an_earlier_reports_runs(tmp_path):
  """A sweep extended with more seeds after its first workdirs were lost: the earlier report's recorded runs fill
  in, a rerun of the same workdir name wins, and the notes say where each run came from."""
  first = tmp_path / "first"
  for variant in ("softmax", "linear"):
    _workdir(first, f"{variant}-seed0", _summary(variant, 0, test=0.4), lr=1e-3)
  earlier = report_runs.rebuild(first, tmp_path / "out", "earlier")["json"]
  runs_dir = tmp_path / "more"
  _workdir(runs_dir, "linear-seed0", _summary("linear", 0, test=0.3), lr=1e-3)  # rerun: replaces the record
  for variant in ("softmax", "linear"):
    _workdir(runs_dir, f"{variant}-seed1", _summary(variant, 1, test=0.5), lr=1e-3)
  paths = report_runs.rebuild(runs_dir, tmp_path / "out", "merged", include=[earlier])
  data = json.loads(paths["json"].read_text())
  got = {(r["variant"], r["seed"]): r["test_accuracy"] for r in data["runs"]}
  assert got == {("softmax", 0): 0.4, ("linear", 0): 0.3, ("softmax", 1): 0.5, ("linear", 1): 0.5}
  assert [(r["variant"], r["n_seeds"]) for r in data["rows"]] == [("softmax", 2), ("linear", 2)]
  md = paths["md"].read_text()
  assert f"3 runs from {runs_dir} + 1 from {earlier} (recorded there; their workdirs are not here) (4 in" in md
  # only the earlier report, no workdirs at all: still a table
  alone = report_runs.rebuild(tmp_path / "gone", tmp_path / "out", "alone", include=[earlier])
  assert len(json.loads(alone["json"].read_text())["runs"]) == 2
  assert f"- 2 from {earlier} (recorded there; their workdirs are not here) (2 in the table)" in alone["md"].read_text()
  # research compare's own JSON names runs by "run" (workdir below the sweep root), not "workdir": same matching
  compare_json = tmp_path / "compare.json"
  runs = json.loads(earlier.read_text())["runs"]
  compare_json.write_text(
    json.dumps({"runs": [{**{k: v for k, v in r.items() if k != "workdir"}, "run": r["workdir"]} for r in runs]})
  )
  from_compare = json.loads(
    report_runs.rebuild(runs_dir, tmp_path / "out", "c", include=[compare_json])["json"].read_text()
  )
  assert {(r["variant"], r["seed"]): r["test_accuracy"] for r in from_compare["runs"]} == got
  # the same --set pairs in another order (compare's JSON stores overrides key-sorted): one row, RUNS_DIR's label
  sets = tmp_path / "sets"
  _workdir(sets, "a-seed1", {**_summary("linear", 1), "label": "task=listops,data.max_length=64"}, lr=1e-3)
  sorted_json = tmp_path / "sorted.json"
  old_run = {**runs[0], "variant": "linear", "overrides": {"data.max_length": 64, "task": "listops"}, "run": "a-seed0"}
  sorted_json.write_text(json.dumps({"runs": [{k: v for k, v in old_run.items() if k != "workdir"}]}))
  rows = json.loads(report_runs.rebuild(sets, tmp_path / "out", "s", include=[sorted_json])["json"].read_text())["rows"]
  assert [(r["label"], r["n_seeds"]) for r in rows] == [("task=listops,data.max_length=64", 2)]
  # a tagged include: the same workdir names become separate rows, with the tag in their label
  tagged = report_runs.rebuild(runs_dir, tmp_path / "out", "tagged", include=[earlier, f"{earlier}:mlm_steps=2000"])
  data = json.loads(tagged["json"].read_text())
  assert [(r["variant"], r["label"], r["n_seeds"]) for r in data["rows"]] == [
    ("softmax", "", 2),  # first-seen order: the earlier report's runs (softmax, then the tagged copies) come first
    ("linear", "mlm_steps=2000", 1),
    ("softmax", "mlm_steps=2000", 1),
    ("linear", "", 2),
  ]
  assert f"+ 2 from {earlier}:mlm_steps=2000 (recorded there" in tagged["md"].read_text()
  # reports of two tasks whose workdirs happen to share names: both kept
  other = tmp_path / "other"
  _workdir(other, "softmax-seed0", _summary("softmax", 0, task="text_cls", test=0.6), lr=1e-3)
  other_json = report_runs.rebuild(other, tmp_path / "out", "other")["json"]
  both = report_runs.rebuild(tmp_path / "gone", tmp_path / "out", "both", include=[earlier, other_json])
  assert [(r["task"], r["variant"]) for r in json.loads(both["json"].read_text())["rows"]] == [
    ("listops", "linear"),
    ("listops", "softmax"),
    ("text_cls", "softmax"),
  ]
  assert report_runs.include_spec("a/b.json:stage=x,steps=2") == (Path("a/b.json"), "stage=x,steps=2")
  assert report_runs.include_spec(earlier) == (earlier, "")
  for spec in ("a.json:stage=", "a.json:=1", "a.json:x=1,oops="):
    with pytest.raises(ValueError, match=r"--include .*expected REPORT.json or REPORT.json:key=value"):
      report_runs.include_spec(spec)
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"rows": []}))
  with pytest.raises(ValueError, match=r"bad.json: expected a report JSON with a non-empty 'runs' list"):
    report_runs.rebuild(runs_dir, tmp_path / "out", "x", include=[bad])
  bad.write_text(json.dumps({"runs": [{k: v for k, v in runs[0].items() if k != "workdir"}]}))
  with pytest.raises(ValueError, match=r"bad.json: run 0 has no 'workdir' \(research report\) or 'run'"):
    report_runs.rebuild(runs_dir, tmp_path / "out", "x", include=[bad])
  bad.write_text(json.dumps({"runs": [{"variant": "softmax"}]}))
  with pytest.raises(ValueError, match=r"bad.json: run 0: malformed run summary"):
    report_runs.rebuild(runs_dir, tmp_path / "out", "x", include=[bad])
