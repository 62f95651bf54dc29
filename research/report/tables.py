"""Compare-run reports: per-run `summary.json` files -> aggregated rows -> markdown, CSV and JSON tables.

A run directory written by `research/train/loop.py:train` holds a `summary.json`:

    {"variant": "linear", "seed": 0, "task": "listops", "params": 123456, "test_accuracy": 0.41,
     "final_test_accuracy": 0.39, "val_accuracy": 0.43, "tokens_per_s": 51234.5,
     "compiled_memory_bytes": 12345678, "wall_s": 95.2, "num_steps": 600, "seq_len": 129,
     "majority_baseline": 0.10, "curve": [[100, 0.21], [200, 0.30]], "device": "cpu", ...}

plus, optionally, "label" (the sweep's set-combination, e.g. "model.d_model=64"; else derived from
"overrides", a {key: value} object as research/sweep.py:summaries attaches) and "lr" (the learning rate;
`research/report/runs.py` fills it from provenance.json). Older summaries may lack "final_test_accuracy".

`aggregate` reduces runs to one row per (task, variant, label) with means and sample stds (ddof=1, None for
a single seed) over seeds; `markdown_table`, `write_csv` and `write_report` render the rows. "test acc (best
val)" is the test accuracy of the best-by-validation checkpoint, "test acc (final)" that of the last step —
LRA's users were confused by the two, so both are reported. Figures live in `research/report/figures.py`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY_FILE = "summary.json"
MISSING = "—"

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))

# Fields every summary must carry (others, e.g. best_step, num_steps, seq_len, are kept but not required).
REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
  "variant": (str,),
  "seed": (int,),
  "task": (str,),
  "params": (int,),
  "test_accuracy": _NUM,
  "val_accuracy": _NUM,
  "tokens_per_s": _OPT_NUM,  # None when no training step was timed (e.g. a run resumed at its last step)
  "compiled_memory_bytes": _OPT_NUM,
  "wall_s": _NUM,
  "majority_baseline": _NUM,
  "curve": (list,),
}
# Optional fields: checked only when present.
OPTIONAL_FIELDS: dict[str, tuple[type, ...]] = {
  "final_test_accuracy": _OPT_NUM,
  "num_steps": (int,),
  "seq_len": (int,),
  "lr": _OPT_NUM,
  "label": (str,),
  "overrides": (dict, list),
  "device": (str,),
}
NOT_LABELS = ("model.attention", "seed")  # overrides that are table columns already, left out of labels

# Markdown columns; "label" is shown only when some row has one.
COLUMNS = (
  "task",
  "variant",
  "label",
  "params",
  "test acc, best val (mean ± std, n)",
  "test acc, final",
  "val acc",
  "tokens/s",
  "compiled memory (MiB)",
  "wall (s)",
  "steps",
  "LR",
  "majority",
)

# CSV columns (raw numbers, accuracies as fractions); empty cell = missing / undefined.
CSV_FIELDS = (
  "task",
  "variant",
  "label",
  "n_seeds",
  "seeds",
  "params",
  "test_accuracy_mean",
  "test_accuracy_std",
  "final_test_accuracy_mean",
  "final_test_accuracy_std",
  "final_n_seeds",
  "val_accuracy_mean",
  "val_accuracy_std",
  "tokens_per_s_mean",
  "tokens_per_s_std",
  "compiled_memory_mib",
  "wall_s_mean",
  "wall_s_total",
  "num_steps",
  "lr",
  "majority_baseline",
  "seq_len",
  "device",
)
_CSV_STR = {"task", "variant", "label", "device"}
_CSV_INT = {"n_seeds", "params", "final_n_seeds", "num_steps", "seq_len"}


def _problems(summary: Any) -> list[str]:
  """What is wrong with one summary (empty list when it is well formed)."""
  if not isinstance(summary, Mapping):
    return [f"expected a JSON object, got {type(summary).__name__}"]
  problems = []
  missing = [k for k in REQUIRED_FIELDS if k not in summary]
  if missing:
    problems.append(f"missing required field(s) {missing}")
  for key, types in {**REQUIRED_FIELDS, **OPTIONAL_FIELDS}.items():
    if key not in summary:
      continue
    value = summary[key]
    if isinstance(value, bool) or not isinstance(value, types):
      want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
      problems.append(f"field {key!r} should be {want}, got {type(value).__name__} {value!r}")
  curve = summary.get("curve")
  if isinstance(curve, list):
    for point in curve:
      if not (
        isinstance(point, list | tuple)
        and len(point) == 2
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in point)
      ):
        problems.append(f"field 'curve' should be a list of [step, val_accuracy] pairs, got {point!r}")
        break
  return problems


def check_summary(summary: Any, where: str) -> None:
  """Raises ValueError naming `where` (a path or a run description) if `summary` is malformed."""
  problems = _problems(summary)
  if problems:
    raise ValueError(f"{where}: malformed run summary: {'; '.join(problems)}")


def _describe(summary: Mapping[str, Any]) -> str:
  label = f" label={summary['label']!r}" if summary.get("label") else ""
  label += f" overrides={summary['overrides']!r}" if summary.get("overrides") else ""
  return f"task={summary.get('task')!r} variant={summary.get('variant')!r}{label} seed={summary.get('seed')!r}"


def load_summaries(workdirs: Iterable[Path]) -> list[dict]:
  """Reads `<workdir>/summary.json` for every workdir, in order.

  Raises FileNotFoundError if a file is missing and ValueError if it is not valid JSON or lacks/mistypes a
  required field; both name the offending path.
  """
  summaries = []
  for workdir in workdirs:
    path = Path(workdir) / SUMMARY_FILE
    if not path.is_file():
      raise FileNotFoundError(f"{path}: expected the run summary ({SUMMARY_FILE}) of run directory {workdir}")
    try:
      summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(
        f"{path}: expected a JSON object with fields {list(REQUIRED_FIELDS)}, but it is not valid JSON ({e})"
      ) from e
    check_summary(summary, str(path))
    summaries.append(summary)
  return summaries


def _mean(xs: Sequence[float]) -> float | None:
  return float(np.mean(np.asarray(xs, dtype=np.float64))) if xs else None


def _std(xs: Sequence[float]) -> float | None:
  """Sample standard deviation (ddof=1); None when undefined (fewer than two values)."""
  if len(xs) < 2:
    return None
  return float(np.std(np.asarray(xs, dtype=np.float64), ddof=1))


def format_overrides(overrides: Any, where: str) -> str:
  """ "k=v,k=v" of a {key: value} object, [key, value] pairs or "key=value" strings, leaving out NOT_LABELS."""
  if isinstance(overrides, Mapping):
    pairs = list(overrides.items())
  elif isinstance(overrides, list | tuple):
    pairs = []
    for item in overrides:
      if isinstance(item, str) and "=" in item:
        pairs.append(tuple(item.split("=", 1)))
      elif isinstance(item, list | tuple) and len(item) == 2:
        pairs.append(tuple(item))
      else:
        raise ValueError(f"{where}: override {item!r} should be [key, value] or 'key=value'")
  else:
    raise ValueError(f"{where}: 'overrides' should be an object or a list, got {overrides!r}")
  return ",".join(f"{k}={v}" for k, v in pairs if k not in NOT_LABELS)


def label_of(summary: Mapping[str, Any]) -> str:
  """A run's set-combination label: its "label", else its "overrides" (as research/sweep.py's summaries()
  attach them) formatted "k=v,k=v", else ""."""
  if summary.get("label"):
    return summary["label"]
  if summary.get("overrides"):
    return format_overrides(summary["overrides"], _describe(summary))
  return ""


def parse_label(label: str) -> list[tuple[str, str]]:
  """ "data.seq_len=64,model.d_model=32" -> [("data.seq_len", "64"), ("model.d_model", "32")]; a comma not
  followed by a key=value (a tuple value) stays in the value."""
  pairs: list[list[str]] = []
  for part in label.split(",") if label else []:
    key, eq, value = part.partition("=")
    if eq and key.strip() and " " not in key.strip():
      pairs.append([key.strip(), value])
    elif pairs:
      pairs[-1][1] += "," + part
  return [(k, v) for k, v in pairs]


def group_key(summary: Mapping[str, Any]) -> tuple[str, str, str]:
  """(task, variant, label): the unit a table row aggregates over seeds."""
  return summary["task"], summary["variant"], label_of(summary)


def series_name(variant: str, label: str = "") -> str:
  """Legend / bar name of one (variant, label) series: "linear" or "linear [model.d_model=64]"."""
  return f"{variant} [{label}]" if label else variant


def _same(runs: Sequence[Mapping[str, Any]], field: str, what: str) -> Any:
  """The one value of `field` over the runs that carry it (None if none does); ValueError if they disagree."""
  values = [r[field] for r in runs if r.get(field) is not None]
  distinct = list(dict.fromkeys(values))
  if len(distinct) > 1:
    if all(isinstance(v, _NUM) for v in distinct) and all(math.isclose(v, distinct[0], rel_tol=1e-9) for v in distinct):
      return distinct[0]
    detail = ", ".join(f"seed {r['seed']}: {r.get(field)}" for r in runs)
    raise ValueError(
      f"{what}: {field} differs across seeds ({detail}); seeds of one row must be the same "
      "configuration (give runs with other settings a distinct 'label')"
    )
  return distinct[0] if distinct else None


def aggregate(summaries: Sequence[Mapping[str, Any]]) -> list[dict]:
  """One row per (task, variant, label): tasks in first-seen order, then rows in first-seen order within a task.

  Means and sample stds (ddof=1; None with a single seed) over seeds of test accuracy (best-val checkpoint),
  final-step test accuracy (over the seeds that report it; None if none does), val accuracy and tokens/s;
  means of compiled memory (MiB) and wall time, plus the total wall time. Raises ValueError on: no summaries,
  a malformed summary, a duplicated seed within a row, seeds of one row that disagree on params, lr,
  num_steps or seq_len, or runs of one (task, label) that disagree on majority_baseline (all name the runs).
  """
  if not summaries:
    raise ValueError("aggregate: no summaries given")
  groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
  for s in summaries:
    check_summary(s, _describe(s) if isinstance(s, Mapping) else repr(s))
    runs = groups.setdefault(group_key(s), [])
    if any(r["seed"] == s["seed"] for r in runs):
      raise ValueError(
        f"{_describe(s)}: seed {s['seed']} appears more than once (runs that differ in other "
        "settings need a distinct 'label')"
      )
    runs.append(s)
  baselines: dict[tuple[str, str], tuple[float, str]] = {}  # (task, label) -> (baseline, first run stating it)
  for s in summaries:
    key, base = (s["task"], label_of(s)), float(s["majority_baseline"])
    if key not in baselines:
      baselines[key] = (base, _describe(s))
    elif not math.isclose(baselines[key][0], base, rel_tol=1e-9, abs_tol=1e-12):
      raise ValueError(
        f"task {key[0]!r}: majority_baseline disagrees across runs: {baselines[key][0]} "
        f"({baselines[key][1]}) vs {base} ({_describe(s)}); runs on other data need a distinct "
        "'label'"
      )

  task_order = list(dict.fromkeys(k[0] for k in groups))
  rows = []
  for (task, variant, label), runs in sorted(groups.items(), key=lambda kv: task_order.index(kv[0][0])):
    what = f"task {task!r} variant {variant!r}" + (f" label {label!r}" if label else "")
    n = len(runs)
    test = [r["test_accuracy"] for r in runs]
    final = [r["final_test_accuracy"] for r in runs if r.get("final_test_accuracy") is not None]
    val = [r["val_accuracy"] for r in runs]
    tps = [r["tokens_per_s"] for r in runs if r.get("tokens_per_s") is not None]
    mem = [r["compiled_memory_bytes"] / 2**20 for r in runs if r.get("compiled_memory_bytes") is not None]
    wall = [r["wall_s"] for r in runs]
    rows.append(
      {
        "task": task,
        "variant": variant,
        "label": label,
        "n_seeds": n,
        "seeds": [r["seed"] for r in runs],
        "params": _same(runs, "params", what),
        "test_accuracy_mean": _mean(test),
        "test_accuracy_std": _std(test),
        "final_test_accuracy_mean": _mean(final),
        "final_test_accuracy_std": _std(final),
        "final_n_seeds": len(final),
        "val_accuracy_mean": _mean(val),
        "val_accuracy_std": _std(val),
        "tokens_per_s_mean": _mean(tps),
        "tokens_per_s_std": _std(tps),
        "compiled_memory_mib": _mean(mem),
        "wall_s_mean": _mean(wall),
        "wall_s_total": float(sum(wall)),
        "num_steps": _same(runs, "num_steps", what),
        "lr": _same(runs, "lr", what),
        "majority_baseline": float(_same(runs, "majority_baseline", what)),
        "seq_len": _same(runs, "seq_len", what),
        "device": ", ".join(dict.fromkeys(r["device"] for r in runs if r.get("device"))),
      }
    )
  return rows


def _pct(x: float) -> str:
  return f"{100.0 * x:.1f}"


def _cell(text: str) -> str:
  return text.replace("|", "\\|")


def _acc_cell(mean: float | None, std: float | None, n: int | None = None) -> str:
  if mean is None:
    return MISSING
  text = _pct(mean) if std is None else f"{_pct(mean)} ± {_pct(std)}"
  return text if n is None else f"{text} ({n})"


def _tokens_cell(row: Mapping[str, Any]) -> str:
  mean, std = row["tokens_per_s_mean"], row["tokens_per_s_std"]
  if mean is None:
    return MISSING
  return f"{mean:,.0f}" if std is None else f"{mean:,.0f} ± {std:,.0f}"


def _opt(value: Any, fmt: str) -> str:
  return MISSING if value is None else format(value, fmt)


def markdown_table(rows: Sequence[Mapping[str, Any]], *, title: str, notes: Sequence[str] = ()) -> str:
  """A GitHub markdown report: title, one table (rows grouped by task), notes as bullets.

  Accuracies are percentages with one decimal, `41.3 ± 0.8 (2)` = mean ± sample std (n seeds) or `41.3 (1)`
  when the std is undefined; the final-step column adds `(n)` only when fewer seeds reported it; missing
  values are "—"; params use thousands separators; LR is printed with %g.
  """
  show_label = any(row.get("label") for row in rows)
  columns = [c for c in COLUMNS if show_label or c != "label"]
  lines = [f"## {title}", ""]
  lines.append("| " + " | ".join(columns) + " |")
  n_text = 3 if show_label else 2  # task, variant[, label] left-aligned; numbers right-aligned
  lines.append("|" + "|".join(["---"] * n_text + ["---:"] * (len(columns) - n_text)) + "|")
  for row in rows:
    n, n_final = row["n_seeds"], row["final_n_seeds"]
    cells = [_cell(str(row["task"])), _cell(str(row["variant"]))]
    if show_label:
      cells.append(_cell(str(row.get("label") or "")))
    cells += [
      _opt(row["params"], ","),
      _acc_cell(row["test_accuracy_mean"], row["test_accuracy_std"], n),
      _acc_cell(row["final_test_accuracy_mean"], row["final_test_accuracy_std"], n_final if 0 < n_final < n else None),
      _acc_cell(row["val_accuracy_mean"], row["val_accuracy_std"]),
      _tokens_cell(row),
      _opt(row["compiled_memory_mib"], ",.1f"),
      _opt(row["wall_s_mean"], ",.1f"),
      _opt(row["num_steps"], ","),
      _opt(row["lr"], "g"),
      _pct(row["majority_baseline"]),
    ]
    lines.append("| " + " | ".join(cells) + " |")
  if notes:
    lines.append("")
    lines.extend(f"- {note}" for note in notes)
  return "\n".join(lines) + "\n"


def _csv_value(field: str, value: Any) -> str:
  if value is None:
    return ""
  if field == "seeds":
    return ";".join(str(s) for s in value)
  return repr(value) if isinstance(value, float) else str(value)  # repr: floats round-trip exactly


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
  """Writes the rows' CSV_FIELDS with the csv module (header line; seeds as "0;1;2"; empty cell = None)."""
  path = Path(path)
  with path.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: _csv_value(k, row.get(k)) for k in CSV_FIELDS})
  return path


def read_csv(path: Path) -> list[dict]:
  """Parses a `write_csv` file back into typed rows (the CSV_FIELDS of `aggregate`'s rows)."""
  out = []
  with Path(path).open(newline="") as f:
    for raw in csv.DictReader(f):
      row: dict[str, Any] = {}
      for k in CSV_FIELDS:
        v = raw[k]
        if k in _CSV_STR:
          row[k] = v
        elif v == "":
          row[k] = [] if k == "seeds" else None
        elif k == "seeds":
          row[k] = [int(s) for s in v.split(";")]
        else:
          row[k] = int(v) if k in _CSV_INT else float(v)
      out.append(row)
  return out


def write_report(
  summaries: Sequence[Mapping[str, Any]],
  out_dir: Path,
  name: str,
  *,
  title: str,
  notes: Sequence[str] = (),
  figures: bool = True,
) -> dict[str, Path]:
  """Writes `<out_dir>/<name>.md`, `.csv`, `.json` and (figures=True) the applicable figures of
  `research/report/figures.py` (`<name>_accuracy.png`, `_curves.png`, `_scaling.png`, `_sweep.png`).

  Returns {"md", "csv", "json", and "accuracy" / "curves" / "scaling" / "sweep" for each figure written}. The JSON holds
  {"title", "notes", "rows", "runs"} with sorted keys, indent 2.
  """
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  rows = aggregate(summaries)
  paths = {ext: out_dir / f"{name}.{ext}" for ext in ("md", "csv", "json")}
  paths["md"].write_text(markdown_table(rows, title=title, notes=notes))
  write_csv(rows, paths["csv"])
  payload = {"title": title, "notes": list(notes), "rows": rows, "runs": [dict(s) for s in summaries]}
  paths["json"].write_text(json.dumps(payload, sort_keys=True, indent=2) + "\n")
  if figures:
    from research.report import figures as figs  # figures imports this module

    paths.update(figs.write_figures(summaries, out_dir, name))
  return paths
