"""Compare-run reports: per-run `summary.json` files -> aggregated rows -> markdown table, JSON and a figure.

A compare run trains one model per (variant, seed); each run directory holds a `summary.json`:

    {"variant": "linear", "seed": 0, "task": "listops", "params": 123456, "test_accuracy": 0.41,
     "val_accuracy": 0.43, "tokens_per_s": 51234.5, "compiled_memory_bytes": 12345678, "wall_s": 95.2,
     "majority_baseline": 0.10, "curve": [[100, 0.21], [200, 0.30]], ...}

`aggregate` reduces them to one row per variant (means, sample stds with ddof=1), `markdown_table` renders
the rows, `plot` draws validation curves and test accuracy bars, and `write_report` writes all three.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SUMMARY_FILE = "summary.json"

# Fields every summary must carry (others, e.g. best_step, num_steps, seq_len, are kept but not required).
REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
  "variant": (str,),
  "seed": (int,),
  "task": (str,),
  "params": (int,),
  "test_accuracy": (int, float),
  "val_accuracy": (int, float),
  "tokens_per_s": (int, float),
  "compiled_memory_bytes": (int, float),
  "wall_s": (int, float),
  "majority_baseline": (int, float),
  "curve": (list,),
}

COLUMNS = (
  "variant",
  "params",
  "test acc (mean ± std, n seeds)",
  "val acc",
  "tokens/s",
  "compiled memory (MiB)",
  "wall (s)",
)


def _problems(summary: Any) -> list[str]:
  """What is wrong with one summary (empty list when it is well formed)."""
  if not isinstance(summary, Mapping):
    return [f"expected a JSON object, got {type(summary).__name__}"]
  problems = []
  missing = [k for k in REQUIRED_FIELDS if k not in summary]
  if missing:
    problems.append(f"missing required field(s) {missing}")
  for key, types in REQUIRED_FIELDS.items():
    if key not in summary:
      continue
    value = summary[key]
    if isinstance(value, bool) or not isinstance(value, types):
      want = " or ".join(t.__name__ for t in types)
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


def _describe(summary: Mapping[str, Any]) -> str:
  return f"variant={summary.get('variant')!r} seed={summary.get('seed')!r}"


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
      raise ValueError(f"{path}: expected a JSON object with fields {list(REQUIRED_FIELDS)}, but it is not "
                       f"valid JSON ({e})") from e
    problems = _problems(summary)
    if problems:
      raise ValueError(f"{path}: malformed run summary: {'; '.join(problems)}")
    summaries.append(summary)
  return summaries


def _mean(xs: Sequence[float]) -> float:
  return float(np.mean(np.asarray(xs, dtype=np.float64)))


def _std(xs: Sequence[float]) -> float:
  """Sample standard deviation (ddof=1); 0.0 for a single value."""
  if len(xs) < 2:
    return 0.0
  return float(np.std(np.asarray(xs, dtype=np.float64), ddof=1))


def aggregate(summaries: Sequence[Mapping[str, Any]]) -> list[dict]:
  """One row per variant (first-seen order) with means and sample stds (ddof=1) over seeds.

  Raises ValueError on: no summaries, a malformed summary, a duplicated (variant, seed), a variant whose
  seeds disagree on `params` or `task`, or runs of the same task that disagree on `majority_baseline`.
  """
  if not summaries:
    raise ValueError("aggregate: no summaries given")
  groups: dict[str, list[Mapping[str, Any]]] = {}
  baselines: dict[str, tuple[float, str]] = {}  # task -> (baseline, first run that stated it)
  for s in summaries:
    problems = _problems(s)
    if problems:
      raise ValueError(f"malformed run summary ({_describe(s) if isinstance(s, Mapping) else s!r}): "
                       f"{'; '.join(problems)}")
    runs = groups.setdefault(s["variant"], [])
    if any(r["seed"] == s["seed"] for r in runs):
      raise ValueError(f"variant {s['variant']!r}: seed {s['seed']} appears more than once")
    runs.append(s)
    task, base = s["task"], float(s["majority_baseline"])
    if task in baselines:
      if not math.isclose(baselines[task][0], base, rel_tol=1e-9, abs_tol=1e-12):
        raise ValueError(f"task {task!r}: majority_baseline disagrees across runs: {baselines[task][0]} "
                         f"({baselines[task][1]}) vs {base} ({_describe(s)})")
    else:
      baselines[task] = (base, _describe(s))

  rows = []
  for variant, runs in groups.items():
    params = sorted({r["params"] for r in runs})
    if len(params) != 1:
      detail = ", ".join(f"seed {r['seed']}: {r['params']}" for r in runs)
      raise ValueError(f"variant {variant!r}: params differ across seeds ({detail}); seeds of one variant "
                       "must be the same model")
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    if len(tasks) != 1:
      raise ValueError(f"variant {variant!r}: runs span several tasks {tasks}; aggregate one task at a time")
    n = len(runs)
    test = [r["test_accuracy"] for r in runs]
    tps = [r["tokens_per_s"] for r in runs]
    rows.append({
      "variant": variant,
      "task": tasks[0],
      "n_seeds": n,
      "seeds": [r["seed"] for r in runs],
      "params": params[0],
      "test_accuracy_mean": _mean(test),
      "test_accuracy_std": _std(test),
      "std_defined": n > 1,
      "val_accuracy_mean": _mean([r["val_accuracy"] for r in runs]),
      "tokens_per_s_mean": _mean(tps),
      "tokens_per_s_std": _std(tps),
      "compiled_memory_mib": _mean([r["compiled_memory_bytes"] / 2**20 for r in runs]),
      "wall_s_mean": _mean([r["wall_s"] for r in runs]),
      "majority_baseline": baselines[tasks[0]][0],
    })
  return rows


def _pct(x: float) -> str:
  return f"{100.0 * x:.1f}"


def _cell(text: str) -> str:
  return text.replace("|", "\\|")


def _test_acc_cell(row: Mapping[str, Any]) -> str:
  mean = _pct(row["test_accuracy_mean"])
  n = row["n_seeds"]
  if not row.get("std_defined", n > 1):
    return f"{mean} ({n} seed{'s' if n != 1 else ''})"
  return f"{mean} ± {_pct(row['test_accuracy_std'])} ({n} seeds)"


def _tokens_cell(row: Mapping[str, Any]) -> str:
  mean = f"{row['tokens_per_s_mean']:,.0f}"
  if not row.get("std_defined", row["n_seeds"] > 1):
    return mean
  return f"{mean} ± {row['tokens_per_s_std']:,.0f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], *, title: str, notes: Sequence[str] = ()) -> str:
  """A GitHub markdown report: title, table (one row per variant), majority baseline line, notes as bullets.

  Accuracies are percentages with one decimal (`41.3 ± 0.8 (2 seeds)`, or `41.3 (1 seed)` when the std is
  undefined); tokens/s is `mean ± std`; params use thousands separators.
  """
  lines = [f"## {title}", ""]
  lines.append("| " + " | ".join(COLUMNS) + " |")
  lines.append("|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|")
  for row in rows:
    cells = [
      _cell(str(row["variant"])),
      f"{row['params']:,}",
      _test_acc_cell(row),
      _pct(row["val_accuracy_mean"]),
      _tokens_cell(row),
      f"{row['compiled_memory_mib']:,.1f}",
      f"{row['wall_s_mean']:,.1f}",
    ]
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  baselines = dict.fromkeys((row.get("task"), row["majority_baseline"]) for row in rows)
  if len(baselines) == 1:
    ((_, base),) = baselines
    lines.append(f"Majority-class baseline (test split): {_pct(base)}%.")
  elif baselines:
    parts = ", ".join(f"{task}: {_pct(base)}%" for task, base in baselines)
    lines.append(f"Majority-class baseline (test split): {parts}.")
  if notes:
    lines.append("")
    lines.extend(f"- {note}" for note in notes)
  return "\n".join(lines) + "\n"


def plot(summaries: Sequence[Mapping[str, Any]], path: Path) -> None:
  """Left: validation accuracy vs step for every run (thin per seed, thick mean per variant, dashed majority
  baseline). Right: test accuracy per variant with sample-std error bars. Saved as PNG at dpi 120.

  Uses the Agg canvas directly (no pyplot, no display, no global backend switch).
  """
  rows = aggregate(summaries)
  fig = Figure(figsize=(12, 4.5))
  FigureCanvasAgg(fig)
  ax_curve, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
  colours = [f"C{i % 10}" for i in range(len(rows))]

  for row, colour in zip(rows, colours, strict=True):
    runs = [s for s in summaries if s["variant"] == row["variant"]]
    per_run: list[dict[float, float]] = []
    for s in runs:
      if not s["curve"]:
        continue
      steps, accs = zip(*sorted((float(a), float(b)) for a, b in s["curve"]), strict=True)
      ax_curve.plot(steps, [100.0 * a for a in accs], color=colour, linewidth=0.8, alpha=0.45)
      per_run.append(dict(zip(steps, accs, strict=True)))
    if per_run:
      common = sorted(set.intersection(*(set(c) for c in per_run)))  # mean only where every seed evaluated
      if common:
        mean = [100.0 * float(np.mean([c[st] for c in per_run])) for st in common]
        label = f"{row['variant']} (n={row['n_seeds']})"
        ax_curve.plot(common, mean, color=colour, linewidth=2.4, label=label)

  for i, base in enumerate(dict.fromkeys(row["majority_baseline"] for row in rows)):
    for ax in (ax_curve, ax_bar):
      ax.axhline(100.0 * base, color="0.3", linestyle="--", linewidth=1.0,
                 label="majority baseline" if (i == 0 and ax is ax_curve) else None)
  ax_curve.set_xlabel("training step")
  ax_curve.set_ylabel("validation accuracy (%)")
  ax_curve.set_title("Validation accuracy")
  ax_curve.grid(alpha=0.3)
  ax_curve.legend(fontsize="small")

  x = np.arange(len(rows))
  means = [100.0 * r["test_accuracy_mean"] for r in rows]
  ax_bar.bar(x, means, color=colours)
  with_std = [i for i, r in enumerate(rows) if r["std_defined"]]  # no error bar where the std is undefined
  if with_std:
    ax_bar.errorbar(x[with_std], [means[i] for i in with_std],
                    yerr=[100.0 * rows[i]["test_accuracy_std"] for i in with_std],
                    fmt="none", ecolor="black", capsize=4)
  for i, r in enumerate(rows):
    ax_bar.annotate(f"n={r['n_seeds']}", (x[i], means[i]), textcoords="offset points", xytext=(6, 3),
                    fontsize="small")
  ax_bar.set_xticks(x, [str(r["variant"]) for r in rows], rotation=30, ha="right")
  ax_bar.set_xlabel("variant")
  ax_bar.set_ylabel("test accuracy (%)")
  ax_bar.set_title("Test accuracy (mean ± sample std over seeds)")
  ax_bar.grid(axis="y", alpha=0.3)

  fig.tight_layout()
  fig.savefig(Path(path), dpi=120, format="png")
  fig.clear()


def write_report(
  summaries: Sequence[Mapping[str, Any]],
  out_dir: Path,
  name: str,
  *,
  title: str,
  notes: Sequence[str] = (),
) -> dict[str, Path]:
  """Writes `<out_dir>/<name>.md`, `.json` and `.png`; returns {"md": ..., "json": ..., "png": ...}."""
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  rows = aggregate(summaries)
  paths = {ext: out_dir / f"{name}.{ext}" for ext in ("md", "json", "png")}
  paths["md"].write_text(markdown_table(rows, title=title, notes=notes))
  payload = {"title": title, "notes": list(notes), "rows": rows, "runs": [dict(s) for s in summaries]}
  paths["json"].write_text(json.dumps(payload, sort_keys=True, indent=2) + "\n")
  plot(summaries, paths["png"])
  return paths
