"""Rebuild reports from run directories alone: `research report RUNS_DIR` calls `rebuild`.

`--include REPORT.json` adds the runs an earlier report recorded (its "runs": the per-run summaries) where their
workdirs are gone, e.g. a sweep extended with more seeds on another machine; the notes say how many came from where.
`--include REPORT.json:key=value,...` also appends those settings to each of its runs' labels, so arms run as
separate sweeps with the same labels (an ablation's "stage=finetune" after a short and after a long pretraining)
become separate rows and series of one report; a tagged run never replaces, nor is replaced by, another.

Layout read (any depth below RUNS_DIR): `<workdir>/summary.json` (written by research/train/loop.py:train),
optionally `<workdir>/provenance.json` ({"config": config.to_dict(), ...}) and, in RUNS_DIR or any directory
above a workdir, a `sweep.json` written by research/sweep.py:execute: a list of run records, or an object
whose "runs" is that list. A record names its workdir by "workdir", "summary_path"/"summary" (the summary
file) or "name" (a directory beside sweep.json), and its set-combination by "label" or "overrides" (a
{key: value} object, [key, value] pairs or "key=value" strings; model.attention and seed are left out since
they are columns already).

Every summary found gets "workdir" (its path relative to RUNS_DIR), "lr" (summary's own, else
provenance config.train.learning_rate) and "label" (summary's own, else the sweep record's, else absent).
`select_lr` keeps, where one (task, variant, label) was trained at several learning rates, only the runs at
the rate chosen on validation: best val_accuracy of the lowest seed, ties -> smaller rate (the rule of
research/sweep.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from research.report import tables

SWEEP_FILE = "sweep.json"
PROVENANCE_FILE = "provenance.json"

NOTES = (
  "test acc, best val: test accuracy of the checkpoint with the best validation accuracy; test acc, final: "
  "of the last step (— where the summary predates final-step evaluation); mean ± sample std over seeds (n)",
  "tokens/s: real (non-padding) tokens per second of training steps, compile and evaluation excluded",
  "compiled memory: XLA compile().memory_analysis() of the train step (temp + argument + output bytes); "
  "not a device-memory measurement",
)
_METRIC = {"tokens": "masked-token accuracy", "match": "in-batch top-1 retrieval accuracy", "regress": "sign accuracy"}


def _load_json(path: Path, expected: str) -> Any:
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: expected {expected}, but it cannot be read as JSON ({e})") from e


def _sweep_records(runs_dir: Path) -> dict[Path, tuple[int, str | None]]:
  """{resolved workdir: (order in its sweep.json, label or None)} from every sweep.json under runs_dir."""
  found: dict[Path, tuple[int, str | None]] = {}
  for path in sorted(runs_dir.rglob(SWEEP_FILE)):
    data = _load_json(path, "a sweep record (a list of runs or an object with 'runs')")
    records = data.get("runs") if isinstance(data, Mapping) else data
    if not isinstance(records, list):
      raise ValueError(f"{path}: expected a list of run records or an object with a 'runs' list")
    for i, rec in enumerate(records):
      if not isinstance(rec, Mapping):
        raise ValueError(f"{path}: run record {i} should be a JSON object, got {rec!r}")
      if rec.get("workdir"):
        workdir = path.parent / rec["workdir"]
      elif isinstance(rec.get("summary_path") or rec.get("summary"), str):
        workdir = (path.parent / (rec.get("summary_path") or rec["summary"])).parent
      elif rec.get("name"):
        workdir = path.parent / rec["name"]
      else:
        continue
      if isinstance(rec.get("label"), str):
        label = rec["label"]
      elif rec.get("overrides") is not None:
        label = tables.format_overrides(rec["overrides"], f"{path}: run record {i}")
      else:
        label = None
      found[workdir.resolve()] = (i, label)
  return found


def _natural(parts: Sequence[str]) -> list[tuple]:
  """Sort key comparing digit runs as numbers: "len=256" before "len=1024", "seed2" before "seed10"."""
  return [tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", p)) for p in parts]


def find_summaries(runs_dir: Path) -> list[dict]:
  """Every `summary.json` below runs_dir (sweep order where a sweep.json lists the run, then natural path order), with
  "workdir", "lr" and "label" attached as the module docstring says.

  Raises FileNotFoundError if runs_dir is not a directory, ValueError naming the file for an unreadable or
  malformed summary.json, provenance.json or sweep.json.
  """
  runs_dir = Path(runs_dir)
  if not runs_dir.is_dir():
    raise FileNotFoundError(f"{runs_dir}: expected a directory of run workdirs (each with {tables.SUMMARY_FILE})")
  records = _sweep_records(runs_dir)
  found = []
  for path in sorted(runs_dir.rglob(tables.SUMMARY_FILE)):
    summary = _load_json(path, f"a run summary with fields {list(tables.REQUIRED_FIELDS)}")
    tables.check_summary(summary, str(path))
    workdir = path.parent
    summary["workdir"] = workdir.relative_to(runs_dir).as_posix()
    prov_path = workdir / PROVENANCE_FILE
    if summary.get("lr") is None and prov_path.is_file():
      prov = _load_json(prov_path, "provenance ({'config': ...})")
      lr = prov.get("config", {}).get("train", {}).get("learning_rate") if isinstance(prov, Mapping) else None
      if isinstance(lr, int | float) and not isinstance(lr, bool):
        summary["lr"] = float(lr)
    order, label = records.get(workdir.resolve(), (None, None))
    if not summary.get("label") and label:
      summary["label"] = label
    found.append((order is None, order or 0, _natural(path.relative_to(runs_dir).parts), summary))
  found.sort(key=lambda t: t[:3])
  return [t[3] for t in found]


def included_runs(path: Path) -> list[dict]:
  """The per-run summaries an earlier report recorded in its JSON (`write_report`'s "runs"), for runs whose
  workdirs are gone. Raises ValueError naming the file if it is not such a report."""
  path = Path(path)
  data = _load_json(path, "a report JSON written by `research report` or `research compare` (with a 'runs' list)")
  runs = data.get("runs") if isinstance(data, Mapping) else None
  if not isinstance(runs, list) or not runs:
    raise ValueError(f"{path}: expected a report JSON with a non-empty 'runs' list of run summaries")
  for i, run in enumerate(runs):
    if not isinstance(run, Mapping):
      raise ValueError(f"{path}: run {i} should be a JSON object, got {run!r}")
    tables.check_summary(run, f"{path}: run {i}")
    if not isinstance(run.get("workdir", run.get("run")), str):
      raise ValueError(
        f"{path}: run {i} has no 'workdir' (research report) or 'run' (research compare) name, so it cannot be "
        "matched with RUNS_DIR's runs"
      )
  # research compare names a run by its workdir below the sweep root ("run"); research report by "workdir"
  return [{**r, "workdir": r.get("workdir", r.get("run"))} for r in runs]


def include_spec(item: str | Path) -> tuple[Path, str]:
  """ "results/x.json:mlm_steps=2000" -> (Path("results/x.json"), "mlm_steps=2000"); a plain path -> (path, "").
  Raises ValueError naming the item if the part after the last ':' is not key=value pairs."""
  text = str(item)
  head, sep, tail = text.rpartition(":")
  if not sep or "=" not in tail or Path(text).is_file():
    return Path(text), ""
  pairs = tables.parse_label(tail)
  if not pairs or ",".join(f"{k}={v}" for k, v in pairs) != tail or any(not v for _, v in pairs):
    raise ValueError(f"--include {text!r}: expected REPORT.json or REPORT.json:key=value[,key=value...]")
  return Path(head), tail


def select_lr(summaries: Sequence[Mapping[str, Any]]) -> tuple[list[dict], list[str]]:
  """Keeps, per (task, variant, label) trained at several "lr"s, only the runs at the rate with the best
  val_accuracy at the lowest seed (ties -> smaller rate). Returns (kept summaries in input order, one note per
  such row: "listops softmax: LR on validation (seed 0): 0.0001 → 31.0, 0.0003 → 35.2 (chosen)").
  """
  groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
  for s in summaries:
    groups.setdefault(tables.group_key(s), []).append(s)
  dropped: set[int] = set()
  notes = []
  for (task, variant, label), runs in groups.items():
    lrs = sorted({s["lr"] for s in runs if s.get("lr") is not None})
    if len(lrs) < 2:
      continue
    seed = min(s["seed"] for s in runs)
    val = {s["lr"]: s["val_accuracy"] for s in runs if s["seed"] == seed and s.get("lr") is not None}
    chosen = min(val, key=lambda lr: (-val[lr], lr))
    dropped.update(id(s) for s in runs if s.get("lr") != chosen)
    grid = ", ".join(f"{lr:g} → {100 * val[lr]:.1f}" + (" (chosen)" if lr == chosen else "") for lr in sorted(val))
    notes.append(f"{task} {tables.series_name(variant, label)}: LR on validation accuracy (seed {seed}): {grid}")
  return [dict(s) for s in summaries if id(s) not in dropped], notes


def _notes(
  every: Sequence[Mapping[str, Any]],
  summaries: Sequence[Mapping[str, Any]],
  runs_dir: Path,
  lr_notes: Sequence[str],
  included: Mapping[str, int] | None = None,
) -> list[str]:
  """Run count, devices and total wall time (of every run found, LR-search runs included), metric names."""
  devices = ", ".join(dict.fromkeys(str(s.get("device") or "unknown") for s in every))
  wall = sum(s["wall_s"] for s in every)
  here = len(every) - sum((included or {}).values())
  parts = [f"{here} run{'' if here == 1 else 's'} from {runs_dir}"] if here or not included else []
  parts += [f"{n} from {path} (recorded there; their workdirs are not here)" for path, n in (included or {}).items()]
  sources = " + ".join(parts)
  # a run resumed before wall_s accumulated across sittings only counts its last sitting
  partial = sum(1 for s in every if s.get("resumed_from") and not s.get("wall_s_complete", False))
  lower = f"; a lower bound: of {partial} resumed run{'' if partial == 1 else 's'} only the last sitting is counted"
  lower = lower if partial else ""
  notes = [
    f"{sources} ({len(summaries)} in the table); device: {devices}; total wall time "
    f"{wall / 3600:.2f} h ({wall:,.0f} s, sum of per-run wall_s{lower})"
  ]
  kinds = {s["task"]: s.get("kind") for s in summaries}
  metrics = [f"{task}: {_METRIC[kind]}" for task, kind in kinds.items() if kind in _METRIC]
  if metrics:
    notes.append("metric where not classification accuracy: " + "; ".join(metrics))
  return notes + list(NOTES) + list(lr_notes)


def _same_labels(summaries: Sequence[dict]) -> None:
  """Give runs whose labels hold the same key=value pairs in another order (a `research compare` JSON stores its
  overrides key-sorted; sweep.json keeps the --set order) one label, the first one seen, so they share a row."""
  first: dict[tuple, str] = {}
  for s in summaries:
    label = tables.label_of(s)
    s["label"] = first.setdefault(tuple(sorted(tables.parse_label(label))), label)


def rebuild(
  runs_dir: Path, out_dir: Path, name: str, title: str | None = None, include: Sequence[Path | str] = ()
) -> dict[str, Path]:
  """Reads every run below runs_dir and writes `<out_dir>/<name>.md`, `.csv`, `.json` and the applicable
  figures (`<name>_accuracy.png`, `_curves.png`, `_scaling.png`, `_sweep.png`); returns {kind: path} as
  `research.report.tables.write_report` does. `include`: earlier report JSONs whose recorded runs join the
  table where runs_dir (or an earlier include) has no run of the same task and workdir name (the notes count
  them per file); "PATH:key=value,..."
  appends those settings to its runs' labels (see the module docstring). Raises ValueError if no run is found."""
  runs_dir = Path(runs_dir)
  summaries = find_summaries(runs_dir) if runs_dir.is_dir() or not include else []
  have = {(s["task"], s["workdir"], "") for s in summaries}
  included: dict[str, int] = {}
  earlier: list[dict] = []
  for item in include:
    path, tag = include_spec(item)
    extra = [r for r in included_runs(path) if (r["task"], r["workdir"], tag) not in have]
    have.update((r["task"], r["workdir"], tag) for r in extra)
    if tag:
      for r in extra:
        r["label"] = ",".join(filter(None, (tables.label_of(r), tag)))
    included[f"{path}:{tag}" if tag else str(path)] = len(extra)
    earlier += extra
  _same_labels(summaries + earlier)
  summaries = earlier + summaries  # the earlier report's order first: its rows keep their places
  if not summaries:
    raise ValueError(
      f"{runs_dir}: no {tables.SUMMARY_FILE} found below it (expected run workdirs written by "
      "`research train` or `research compare`)"
    )
  kept, lr_notes = select_lr(summaries)
  tasks = ", ".join(dict.fromkeys(s["task"] for s in kept))
  return tables.write_report(
    kept,
    Path(out_dir),
    name,
    title=title or f"{name}: {tasks}",
    notes=_notes(summaries, kept, runs_dir, lr_notes, included),
  )
