"""Report figures from run summaries (the `summary.json` dicts of `research/report/tables.py`).

  accuracy  test accuracy per task × (variant, label): grouped bars = mean of the best-validation checkpoint
            over seeds with sample-std error bars (none for one seed), "x" = mean final-step test accuracy,
            dashed line = the task's majority baseline.
  curves    validation accuracy vs training step, one panel per task: thin line per seed, thick line = mean
            over seeds at the steps every seed evaluated, dashed = majority baseline.
  scaling   train tokens/s and compiled memory (MiB) vs sequence length (summary "seq_len"), log-log, one row
            of panels per task, one line per variant (mean over seeds and runs at each length; lines with a
            single length left out). When runs of one (task, variant, length) carry several labels (e.g. a
            width sweep at every length) the label joins the line's key.
  sweep     test accuracy vs a numeric `--set` axis (the x axis: model.d_model when it varies, else the
            numeric key with the most values), one panel per task and setting of the other varying keys
            (e.g. Zoology's MQAR: accuracy vs width, one panel per sequence length; keys always set with x,
            such as model.mlp_dim with model.d_model, make no panels), one line per variant (mean over seeds,
            sample-std error bars); needs some line with two x values.

Each function writes one PNG (dpi 120) and returns its path, or returns None (writing nothing) when its data
is absent: no summaries, no curve points, or no line with two distinct lengths. Uses matplotlib's Agg canvas
directly (no pyplot, no display, no global backend switch).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from research.report.tables import aggregate, group_key, label_of, parse_label, series_name

DPI = 120
Summaries = Sequence[Mapping[str, Any]]


def _styles(names: Sequence[str]) -> dict[str, dict[str, Any]]:
  """Stable style per series name in first-seen order: tab10 colours up to 10 series, else tab20; past 20
  series the colours repeat with another line style and bar hatch so no two series look alike."""
  names = list(dict.fromkeys(names))
  cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
  dashes, hatches = ("-", "--", ":", "-."), (None, "//", "..", "xx")
  return {
    name: {"color": cmap(i % cmap.N), "linestyle": dashes[i // cmap.N % 4], "hatch": hatches[i // cmap.N % 4]}
    for i, name in enumerate(names)
  }


def _display_names(series: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
  """Legend names for (variant, label) series: the task is the panel or bar group, so `task=` leaves the label;
  so does every key=value that all series share; keys shorten to their last dotted part unless two would
  collide. Series whose short names would coincide keep their full `series_name`."""
  series = list(dict.fromkeys(series))
  parsed = {sv: [(k, v) for k, v in parse_label(sv[1]) if k != "task"] for sv in series}
  shared = set.intersection(*(set(p) for p in parsed.values())) if parsed else set()
  keys = {k for p in parsed.values() for k, _ in p}
  tails = [k.rsplit(".", 1)[-1] for k in keys]
  short = {k: k.rsplit(".", 1)[-1] if tails.count(k.rsplit(".", 1)[-1]) == 1 else k for k in keys}
  names = {
    sv: series_name(sv[0], ",".join(f"{short[k]}={v}" for k, v in p if (k, v) not in shared))
    for sv, p in parsed.items()
  }
  by_name: dict[str, list] = {}
  for sv in series:  # only series that differ just in task (a known one) may share a name
    by_name.setdefault(names[sv], []).append(dict(parse_label(sv[1])).get("task"))
  if any(len(ts) > 1 and (None in ts or len(set(ts)) < len(ts)) for ts in by_name.values()):
    return {sv: series_name(*sv) for sv in series}
  return names


def _title(fig: Figure, text: str, legend_width: float) -> None:
  """A left-aligned figure title wrapped to the width left of the legend (about 13 characters per inch), so the
  legend outside on the right never covers it."""
  fig.suptitle(textwrap.fill(text, max(30, int(13 * (fig.get_figwidth() - legend_width - 1.5)))), x=0.01, ha="left")


def _legend(fig: Figure, handles: list) -> None:
  """One legend for the figure, outside on the right, in as many columns as needed for 20 entries each."""
  fig.legend(handles=handles, loc="outside right upper", fontsize="small", ncols=math.ceil(len(handles) / 20))


def _new_figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _save(fig: Figure, path: Path) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=DPI, format="png")
  fig.clear()
  return path


def accuracy(summaries: Summaries, path: Path, *, title: str | None = None) -> Path | None:
  """Grouped bars of test accuracy per task × series (see the module docstring); None without summaries."""
  if not summaries:
    return None
  rows = aggregate(summaries)
  tasks = list(dict.fromkeys(r["task"] for r in rows))
  names = _display_names([(r["variant"], r["label"]) for r in rows])
  styles = _styles(list(names.values()))
  per_task = {t: [r for r in rows if r["task"] == t] for t in tasks}
  width = 0.8 / max(len(rs) for rs in per_task.values())
  n_bars = len(rows)
  legend_width = 0.075 * max(len(n) for n in names.values())  # inches of the legend outside the axes
  fig = _new_figure(max(6.0, 2.0 + 0.32 * n_bars + 0.6 * len(tasks)) + legend_width, 4.8)
  ax = fig.subplots()
  for i, task in enumerate(tasks):
    rs = per_task[task]
    xs = i + (np.arange(len(rs)) - (len(rs) - 1) / 2) * width
    for x, r in zip(xs, rs, strict=True):
      mean = 100.0 * r["test_accuracy_mean"]
      style = styles[names[r["variant"], r["label"]]]
      ax.bar(x, mean, width=width * 0.92, color=style["color"], hatch=style["hatch"], edgecolor="white", linewidth=0)
      if r["test_accuracy_std"] is not None:
        ax.errorbar(x, mean, yerr=100.0 * r["test_accuracy_std"], fmt="none", ecolor="black", capsize=3, linewidth=1.0)
      if r["final_test_accuracy_mean"] is not None:
        ax.plot(x, 100.0 * r["final_test_accuracy_mean"], marker="x", color="black", markersize=5, linestyle="")
    half = len(rs) * width / 2 + 0.05
    ax.hlines(100.0 * rs[0]["majority_baseline"], i - half, i + half, colors="0.3", linestyles="--", linewidth=1.2)
  handles = [Patch(facecolor=st["color"], hatch=st["hatch"], edgecolor="white", label=n) for n, st in styles.items()]
  handles += [
    Line2D([], [], marker="x", color="black", linestyle="", label="final-step test acc"),
    Line2D([], [], color="0.3", linestyle="--", label="majority baseline"),
  ]
  ax.set_xticks(range(len(tasks)), tasks)
  ax.set_ylabel("test accuracy (%)")
  _title(fig, title or "Test accuracy of the best-validation checkpoint (mean ± sample std over seeds)", legend_width)
  ax.grid(axis="y", alpha=0.3)
  ax.set_ylim(bottom=0)
  _legend(fig, handles)
  return _save(fig, path)


def _task_panels(fig: Figure, n: int) -> list:
  cols = min(3, n)
  axes = fig.subplots(math.ceil(n / cols), cols, squeeze=False).ravel()
  for ax in axes[n:]:
    ax.set_visible(False)
  return list(axes[:n])


def curves(summaries: Summaries, path: Path, *, title: str | None = None) -> Path | None:
  """Validation accuracy vs step, one panel per task; None when no summary has a curve point."""
  with_curve = [s for s in summaries if s.get("curve")]
  if not with_curve:
    return None
  tasks = list(dict.fromkeys(s["task"] for s in with_curve))
  names = _display_names([(s["variant"], label_of(s)) for s in with_curve])
  styles = _styles(list(names.values()))
  cols = min(3, len(tasks))
  legend_width = 0.075 * max(len(n) for n in names.values())
  fig = _new_figure(2.0 + 4.2 * cols + legend_width, 0.6 + 3.4 * math.ceil(len(tasks) / cols))
  for ax, task in zip(_task_panels(fig, len(tasks)), tasks, strict=True):
    runs = [s for s in with_curve if s["task"] == task]
    groups: dict[tuple[str, str, str], list] = {}
    for s in runs:
      groups.setdefault(group_key(s), []).append(s)
    for (_, variant, label), group in groups.items():
      style = styles[names[variant, label]]
      per_run = []
      for s in group:
        steps, accs = zip(*sorted((float(a), float(b)) for a, b in s["curve"]), strict=True)
        ax.plot(steps, [100.0 * a for a in accs], color=style["color"], linewidth=0.7, alpha=0.4)
        per_run.append(dict(zip(steps, accs, strict=True)))
      common = sorted(set.intersection(*(set(c) for c in per_run)))  # mean only where every seed evaluated
      if common:
        mean = [100.0 * float(np.mean([c[st] for c in per_run])) for st in common]
        ax.plot(common, mean, color=style["color"], linestyle=style["linestyle"], linewidth=2.0)
    for base in dict.fromkeys(float(s["majority_baseline"]) for s in runs):
      ax.axhline(100.0 * base, color="0.3", linestyle="--", linewidth=1.0)
    ax.set_title(task)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
  handles = [
    Line2D([], [], color=st["color"], linestyle=st["linestyle"], linewidth=2.0, label=n) for n, st in styles.items()
  ]
  handles.append(Line2D([], [], color="0.3", linestyle="--", label="majority baseline"))
  _legend(fig, handles)
  _title(fig, title or "Validation accuracy (thin: seeds, thick: mean over seeds)", legend_width)
  return _save(fig, path)


def _scaling_series(summaries: Summaries) -> dict[str, dict[str, dict[int, list[Mapping[str, Any]]]]]:
  """{task: {line name: {seq_len: runs}}} for the lines with at least two lengths. The label joins a line's
  name only where one (task, variant, length) has runs with several labels."""
  runs = [s for s in summaries if isinstance(s.get("seq_len"), int)]
  labels: dict[tuple[str, str, int], set[str]] = {}
  for s in runs:
    labels.setdefault((s["task"], s["variant"], s["seq_len"]), set()).add(label_of(s))
  by_label = {task for (task, _, _), v in labels.items() if len(v) > 1}
  out: dict[str, dict[str, dict[int, list]]] = {}
  for s in runs:
    name = series_name(s["variant"], label_of(s) if s["task"] in by_label else "")
    out.setdefault(s["task"], {}).setdefault(name, {}).setdefault(s["seq_len"], []).append(s)
  out = {task: {n: pts for n, pts in lines.items() if len(pts) > 1} for task, lines in out.items()}
  return {task: lines for task, lines in out.items() if lines}


def scaling(summaries: Summaries, path: Path, *, title: str | None = None) -> Path | None:
  """Tokens/s and compiled memory vs sequence length (log-log), one row of two panels per task; lines with a
  single length are left out. None unless some line has two lengths."""
  per_task = _scaling_series(summaries)
  if not per_task:
    return None
  styles = _styles([name for lines in per_task.values() for name in lines])
  fig = _new_figure(12.0, 0.6 + 3.8 * len(per_task))
  axes = fig.subplots(len(per_task), 2, squeeze=False)
  for (ax_tps, ax_mem), (task, lines) in zip(axes, per_task.items(), strict=True):
    for name, points in lines.items():
      for ax, field, scale in ((ax_tps, "tokens_per_s", 1.0), (ax_mem, "compiled_memory_bytes", 2.0**-20)):
        xs, ys = [], []
        for n in sorted(points):
          values = [s[field] for s in points[n] if s.get(field) is not None]
          if values:
            xs.append(n)
            ys.append(scale * float(np.mean(values)))
        if xs:
          ax.plot(
            xs,
            ys,
            color=styles[name]["color"],
            linestyle=styles[name]["linestyle"],
            marker="o",
            linewidth=1.5,
            markersize=4,
          )
    for ax, ylabel, what in (
      (ax_tps, "train tokens/s", "throughput"),
      (ax_mem, "compiled memory of the train step (MiB)", "compiled memory"),
    ):
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_xlabel("sequence length (tokens)")
      ax.set_ylabel(ylabel)
      ax.set_title(f"{task}: {what}")
      ax.grid(alpha=0.3, which="both")
  _legend(
    fig, [Line2D([], [], color=st["color"], linestyle=st["linestyle"], marker="o", label=n) for n, st in styles.items()]
  )
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def _numeric(value: str) -> float | None:
  try:
    return float(value)
  except ValueError:
    return None


def _sweep_series(summaries: Summaries) -> tuple[str, dict[str, dict[str, dict[float, list[float]]]]] | None:
  """(x key, {panel title: {variant: {x: test accuracies}}}) or None; see `sweep` in the module docstring."""
  parsed = [(s, dict(parse_label(label_of(s)))) for s in summaries]
  values: dict[str, set[str | None]] = {}
  for _, items in parsed:
    for k, v in items.items():
      values.setdefault(k, set()).add(v)
  for k, vs in values.items():  # a key some runs do not set is one more value (e.g. an ablation at one x)
    if any(k not in items for _, items in parsed):
      vs.add(None)
  numeric = [
    k for k, vs in values.items() if len(vs - {None}) > 1 and all(_numeric(v) is not None for v in vs - {None})
  ]
  if not numeric:
    return None
  x_key = "model.d_model" if "model.d_model" in numeric else max(numeric, key=lambda k: (len(values[k] - {None}), k))
  pairs = {k: {(items.get(x_key), items.get(k)) for _, items in parsed} for k in values}
  tied = {k for k, ps in pairs.items() if len({x for x, _ in ps}) == len(ps)}  # set together with x: no panels
  others = [k for k, vs in values.items() if k != x_key and len(vs) > 1 and k not in tied]
  panels: dict[str, dict[str, dict[float, list[float]]]] = {}
  for s, items in parsed:
    if x_key not in items:
      continue
    title = ", ".join([s["task"], *(f"{k}={items[k]}" for k in others if k in items)])
    by_x = panels.setdefault(title, {}).setdefault(s["variant"], {})
    by_x.setdefault(float(items[x_key]), []).append(float(s["test_accuracy"]))
  if not any(len(xs) > 1 for lines in panels.values() for xs in lines.values()):
    return None
  return x_key, panels


def sweep(summaries: Summaries, path: Path, *, title: str | None = None) -> Path | None:
  """Test accuracy vs a numeric sweep axis (see the module docstring); None without such an axis."""
  found = _sweep_series(summaries)
  if found is None:
    return None
  x_key, panels = found
  styles = _styles([v for lines in panels.values() for v in lines])
  cols = min(3, len(panels))
  rows = -(-len(panels) // cols)
  fig = _new_figure(1.5 + 4.2 * cols, 0.6 + 3.6 * rows)
  axes = fig.subplots(rows, cols, squeeze=False).ravel()
  for ax, (panel, lines) in zip(axes, panels.items(), strict=False):
    for variant, by_x in lines.items():
      xs = sorted(by_x)
      means = [100.0 * float(np.mean(by_x[x])) for x in xs]
      stds = [100.0 * float(np.std(by_x[x], ddof=1)) if len(by_x[x]) > 1 else 0.0 for x in xs]
      ax.errorbar(
        xs,
        means,
        yerr=stds,
        color=styles[variant]["color"],
        linestyle=styles[variant]["linestyle"],
        marker="o",
        markersize=4,
        linewidth=1.5,
        capsize=3,
      )
    ax.set_xscale("log", base=2)
    ax.set_xlabel(x_key)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(panel, fontsize="medium")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3, which="both")
  for ax in axes[len(panels) :]:
    ax.set_visible(False)
  _legend(
    fig, [Line2D([], [], color=st["color"], linestyle=st["linestyle"], marker="o", label=n) for n, st in styles.items()]
  )
  fig.suptitle(title or f"Test accuracy vs {x_key} (mean ± sample std over seeds)")
  return _save(fig, path)


def write_figures(summaries: Summaries, out_dir: Path, name: str) -> dict[str, Path]:
  """Writes `<name>_accuracy.png`, `<name>_curves.png`, `<name>_scaling.png`, `<name>_sweep.png` where
  applicable; returns {"accuracy" / "curves" / "scaling" / "sweep": path} for the ones written."""
  out = {}
  for key, fn in (("accuracy", accuracy), ("curves", curves), ("scaling", scaling), ("sweep", sweep)):
    path = fn(summaries, Path(out_dir) / f"{name}_{key}.png")
    if path is not None:
      out[key] = path
  return out
