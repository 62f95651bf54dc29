"""Sweeps: variants x seeds x `--set` grids, learning-rate selection on validation, width matching, resume.

`plan(...)` enumerates `Run`s and validates every config before anything trains; `execute(...)` trains them
in order (skipping finished ones), prints "[k/N] ... ETA" lines and keeps `<root>/sweep.json` up to date.

Conventions:
  * `sets` are "key=value" strings (as `--set`). Repeating a key with different values makes a grid axis;
    different keys multiply. One string may tie several keys ("data.seq_len=128,data.num_kv=8"): those move
    together along one axis. Overrides are passed through the experiment's own argument
    (`experiments/x.py:<base args>,<overrides>`), so experiment-level keys such as lra.py's `task=` or `size=`
    work as well as dotted config keys and research.config.ALIASES. The variant, seed and learning rate are
    set after loading (model.attention, seed, train.learning_rate).
  * Same data order per seed across variants: a run's training data order is `train_dataset(task, bs,
    seed=config.seed)` (research/train/loop.py), and `config.seed` is the run's seed, whatever the variant.
  * LR selection (`lr_grid`): stage 1 trains the first seed of every (variant, set-combination, width) at every
    grid rate; the rate with the best summary["val_accuracy"] wins (ties -> the smaller rate); stage 2 trains the
    other seeds at it. The first-seed run at the chosen rate is reused as that seed's final run.
  * `match_params=REF`: every other variant's model.d_model (a multiple of 2*num_heads in [d/4, 4d]) and
    model.mlp_dim (same mlp_dim/d_model ratio) are chosen so its parameter count is closest to REF's at the
    configured width. Counts come from jax.eval_shape of model.init, nothing is trained; they equal
    summary["params"] of a trained run (research/train/state.py count_params). Parameters that do not scale
    with width (e.g. linformer's E, F: 2·proj_dim·attention max_len per layer) may leave a gap; it is logged.
  * A run's workdir is `<root>/<run.name>`. It is finished when it holds summary.json and its provenance.json
    config equals the run's config; a workdir whose provenance holds a DIFFERENT config is an error (train()
    would otherwise resume a different model's checkpoints). model/train keys added to the project after a run
    was made count as equal while the new config keeps their default (research.config *_DEFAULTS). An
    interrupted run resumes from its checkpoints.
  * `<root>/sweep.json` lists every run (name, variant, seed, lr, overrides, width, status, final, summary_path,
    lr_selection, params_match, spec); `spec` is one `--config` string that reloads the run's exact config,
    so `research train --config SPEC --workdir W` reruns one cell. A run that raises TrainingDiverged is
    recorded as "diverged" (for LR search: that rate is out of the running) and the sweep goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from research.config import ALIASES, MODEL_DEFAULTS, TRAIN_DEFAULTS, apply_overrides, load_config, parse_overrides

SWEEP_FILE = "sweep.json"
SWEPT_KEYS = {"model.attention": "variants", "seed": "seeds"}  # keys a --set may not touch


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a sweep.

  `lr=None` with an empty `lr_grid` keeps the config's learning rate; `lr=None` with a non-empty `lr_grid`
  is a stage-2 run whose rate is chosen on validation by `execute` (see `resolve`). `width` holds the
  model.d_model / model.mlp_dim set by match_params, `matched` the facts behind them (for the record).
  """

  variant: str
  seed: int
  overrides: tuple[tuple[str, Any], ...] = ()
  lr: float | None = None
  lr_grid: tuple[float, ...] = ()
  width: tuple[tuple[str, int], ...] = ()
  matched: tuple[tuple[str, Any], ...] = ()

  @property
  def name(self) -> str:
    """Stable, filesystem-safe: variant[-dD][-overrides slug][-lrX]-seedS[-hash of the overrides]."""
    parts = [self.variant]
    if self.width:
      parts.append(f"d{dict(self.width)['model.d_model']}")
    if self.overrides:
      parts.append("-".join(f"{k.rsplit('.', 1)[-1]}{v}" for k, v in self.overrides)[:40])
    if self.lr is not None:
      parts.append(f"lr{self.lr:g}")
    elif self.lr_grid:
      parts.append("lrbest")  # placeholder until resolved; never a workdir
    parts.append(f"seed{self.seed}")
    if self.overrides:
      parts.append(hashlib.sha1(json.dumps(sorted(self.overrides), default=repr).encode()).hexdigest()[:8])
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", "-".join(parts))

  @property
  def group(self) -> tuple:
    """Runs that share a learning-rate selection: same variant, overrides and width."""
    return (self.variant, self.overrides, self.width)

  @property
  def deferred(self) -> bool:
    return self.lr is None and bool(self.lr_grid)

  def fixed(self) -> tuple[tuple[str, Any], ...]:
    """What the sweep sets after the overrides: variant, seed, matched width and (once known) learning rate."""
    if self.deferred:
      raise ValueError(
        f"run {self.name}: its learning rate is chosen from {list(self.lr_grid)} on validation; resolve it first"
      )
    lr = (("train.learning_rate", float(self.lr)),) if self.lr is not None else ()
    return (("model.attention", self.variant), ("seed", self.seed), *self.width, *lr)

  def config(self, base_spec: str) -> ml_collections.ConfigDict:
    """load_config(base_spec + overrides), then apply_overrides(variant, seed, width, learning rate)."""
    fixed = self.fixed()
    return apply_overrides(load_config(spec_with(base_spec, self.overrides)), dict(fixed))

  def spec(self, base_spec: str) -> str:
    """One `--config` string that loads this run's config: `research train --config SPEC` reruns the cell."""
    return spec_with(base_spec, self.overrides + self.fixed())


def spec_with(base_spec: str, overrides: Iterable[tuple[str, Any]]) -> str:
  """`experiments/x.py:a=1` + (("b", "s"),) -> `experiments/x.py:a=1,b='s'` (values as Python literals)."""
  path, _, arg = base_spec.partition(":")
  items = ([arg] if arg.strip() else []) + [f"{k}={v!r}" for k, v in overrides]
  return f"{path}:{','.join(items)}" if items else path


def grid_axes(sets: Sequence[str]) -> list[list[tuple[tuple[str, Any], ...]]]:
  """ "key=value" strings -> axes, each a list of points (tuples of (key, value) pairs); aliases resolved."""
  axes: dict[tuple[str, ...], list] = {}
  for text in sets:
    point = tuple((ALIASES.get(k, k), v) for k, v in parse_overrides(text).items())
    if not point:
      raise ValueError(f"--set {text!r} sets nothing (expected key=value)")
    keys = tuple(k for k, _ in point)
    for key in keys:
      if key in SWEPT_KEYS:
        raise ValueError(f"--set {text!r}: {key} is swept by --{SWEPT_KEYS[key]}, not by --set")
      clash = next((axis for axis in axes if key in axis and axis != keys), None)
      if clash:
        raise ValueError(
          f"--set {text!r}: key {key!r} is already on the axis {'+'.join(clash)}; a key must "
          "always be set together with the same keys"
        )
    if point not in axes.setdefault(keys, []):
      axes[keys].append(point)
  return list(axes.values())


def plan(
  base_spec: str,
  variants: str | Sequence[str],
  seeds: int | Sequence[int],
  sets: Sequence[str] = (),
  lr_grid: Sequence[float] = (),
  match_params: str | None = None,
  log: Callable[[str], Any] = print,
) -> list[Run]:
  """Every run of the sweep, stage-1 (LR search) runs first; every config is validated before returning."""
  from research.train.loop import validate

  variants = [v.strip() for v in (variants.split(",") if isinstance(variants, str) else variants) if v.strip()]
  variants = list(dict.fromkeys(variants))
  if not variants:
    raise ValueError("no variants given (expected e.g. softmax,linear)")
  seeds = tuple(range(seeds)) if isinstance(seeds, int) else tuple(dict.fromkeys(seeds))
  if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds):
    raise ValueError(f"seeds must be a positive count or non-negative integers, got {seeds!r}")
  grid = tuple(sorted({float(lr) for lr in lr_grid}))
  if any(not lr > 0 for lr in grid):
    raise ValueError(f"lr_grid must hold positive learning rates, got {list(lr_grid)}")
  if grid and "train.learning_rate" in {ALIASES.get(k, k) for text in sets for k in parse_overrides(text)}:
    raise ValueError("train.learning_rate is chosen from lr_grid; drop it from --set")
  load_config(base_spec)  # a bad config path or base argument is reported as such
  combos = [sum(points, ()) for points in itertools.product(*grid_axes(sets))]
  for combo in combos:
    try:
      load_config(spec_with(base_spec, combo))
    except ValueError as e:
      raise ValueError(f"--set {', '.join(f'{k}={v!r}' for k, v in combo)}: {e}") from e

  if grid:
    runs = [Run(v, seeds[0], c, lr, grid) for c in combos for v in variants for lr in grid]
    runs += [Run(v, s, c, None, grid) for s in seeds[1:] for c in combos for v in variants]
  else:
    runs = [Run(v, s, c) for s in seeds for c in combos for v in variants]
  checks = runs + [Run(match_params, seeds[0], c) for c in combos] if match_params else runs
  for r in dict.fromkeys(dataclasses.replace(r, seed=seeds[0]) for r in checks):  # seeds cannot be invalid
    try:
      validate((dataclasses.replace(r, lr=grid[0]) if r.deferred else r).config(base_spec))
    except ValueError as e:
      raise ValueError(
        f"run {r.name} (variant {r.variant!r}, seed {r.seed}{''.join(f', {k}={v!r}' for k, v in r.overrides)}): {e}"
      ) from e
  if match_params:  # widths change d_model/mlp_dim only, to valid multiples of 2*num_heads
    widths = {(v, c): w for c in combos for v, w in match_widths(base_spec, c, match_params, variants, log).items()}
    runs = [
      dataclasses.replace(r, width=widths[r.variant, r.overrides][0], matched=widths[r.variant, r.overrides][1])
      if (r.variant, r.overrides) in widths
      else r
      for r in runs
    ]
  return runs


def count_params(config: ml_collections.ConfigDict) -> int:
  """Trainable parameters of the config's model, from shapes alone (jax.eval_shape of model.init)."""
  import flax.linen as nn
  import jax

  from research.data.pipeline import build_task, train_dataset
  from research.train.loop import encoder_config
  from research.train.objectives import build_model, model_inputs

  task = build_task(config.task, config.data.to_dict())  # memoised per data config
  model = build_model(
    task.kind, encoder_config(config, task.seq_len, task.vocab_size), task.num_classes, config.model.pool
  )
  batch = train_dataset(task, 2, 0)[0]
  shapes = jax.eval_shape(lambda rng: model.init(rng, *model_inputs(task.kind, batch)), jax.random.PRNGKey(0))
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(shapes["params"]))))


def match_widths(
  base_spec: str, combo: tuple, reference: str, variants: Sequence[str], log: Callable[[str], Any] = print
) -> dict[str, tuple[tuple, tuple]]:
  """variant -> (width overrides, matched facts) for every variant other than `reference` (see module doc)."""
  ref = Run(reference, 0, combo).config(base_spec)
  target, d0, mlp0, heads = count_params(ref), ref.model.d_model, ref.model.mlp_dim, ref.model.num_heads
  step = 2 * heads
  candidates = list(range(max(step, d0 // 4 // step * step), 4 * d0 + 1, step))
  log(f"match_params: {reference} has {target:,} parameters at d_model {d0} (mlp_dim {mlp0})")
  out = {}
  for variant in variants:
    if variant == reference:
      continue
    counts: dict[int, int] = {}

    def count(d, variant=variant, counts=counts):
      if d not in counts:
        width = (("model.d_model", d), ("model.mlp_dim", max(1, round(d * mlp0 / d0))))
        counts[d] = count_params(Run(variant, 0, combo, width=width).config(base_spec))
      return counts[d]

    lo, hi = 0, len(candidates) - 1  # first candidate whose count reaches the target (counts grow with d)
    while lo < hi:
      mid = (lo + hi) // 2
      lo, hi = (lo, mid) if count(candidates[mid]) >= target else (mid + 1, hi)
    best = min(candidates[max(lo - 1, 0) : lo + 1], key=lambda d: (abs(count(d) - target), d))
    width = (("model.d_model", best), ("model.mlp_dim", max(1, round(best * mlp0 / d0))))
    rel = count(best) / target - 1
    out[variant] = (
      width,
      (
        ("reference", reference),
        ("reference_params", target),
        ("params", count(best)),
        ("rel_diff", round(rel, 6)),
        ("d_model", best),
        ("mlp_dim", width[1][1]),
      ),
    )
    log(
      f"match_params: {variant} d_model {best} mlp_dim {width[1][1]} -> {count(best):,} parameters "
      f"({rel:+.1%} vs {reference})" + ("  [outside 10%: width alone cannot match]" if abs(rel) > 0.1 else "")
    )
  return out


def _as_json(config) -> Any:
  return json.loads(json.dumps(config.to_dict(), default=str))


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    return [d for k in sorted(set(a) | set(b), key=str) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
  return [] if a == b else [f"{prefix[:-1]}: {a!r} != {b!r}"]


def _backfill(saved: Any, config_json: Any) -> Any:
  """`saved` plus the model/train keys it predates, where the new config keeps their default (same run)."""
  if not isinstance(saved, dict) or not isinstance(config_json, dict):
    return saved
  saved = dict(saved)
  for section, defaults in (("model", MODEL_DEFAULTS), ("train", TRAIN_DEFAULTS)):
    old, new = saved.get(section), config_json.get(section)
    if isinstance(old, dict) and isinstance(new, dict):
      saved[section] = {**{k: v for k, v in new.items() if k not in old and k in defaults and v == defaults[k]}, **old}
  return saved


def _state(workdir: Path, config_json: Any) -> str:
  """ "finished" | "interrupted" (same config, no summary) | "new"; a different config is an error."""
  prov = workdir / "provenance.json"
  if not prov.exists():
    return "new"
  saved = _backfill(json.loads(prov.read_text()).get("config"), config_json)
  if saved != config_json:
    diff = _diff(saved, config_json)
    raise ValueError(
      f"workdir {workdir} holds a run with a different config ({'; '.join(diff[:4])}"
      f"{'; ...' if len(diff) > 4 else ''}); remove it or choose another sweep directory"
    )
  return "finished" if (workdir / "summary.json").exists() else "interrupted"


def _duration(seconds: float) -> str:
  s = int(round(seconds))
  return f"{s} s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def choose_lr(records: Sequence[dict]) -> tuple[float | None, dict[str, float | None]]:
  """(chosen lr, {lr: val_accuracy}) from stage-1 records; the best val wins, ties -> the smaller lr."""
  results = {r["lr"]: (r["summary"] or {}).get("val_accuracy") for r in records}
  ok = [(lr, v) for lr, v in results.items() if v is not None and math.isfinite(v)]
  chosen = min(ok, key=lambda t: (-t[1], t[0]))[0] if ok else None
  return chosen, {f"{lr:g}": v for lr, v in sorted(results.items())}


def execute(
  runs: Sequence[Run],
  base_spec: str,
  workdir_root: str | Path,
  train_fn: Callable | None = None,
  progress: bool = True,
  log: Callable[[str], Any] = print,
) -> list[dict]:
  """Train every run not finished yet; returns one record per run (in order) with its summary.

  A record: name, variant, seed, lr (the rate trained with), overrides, width, status (done | reused |
  diverged | skipped | interrupted | failed | pending), final (False for LR-search runs at a rate not chosen),
  workdir, summary_path (relative to the root), lr_selection ({grid, val_accuracy per lr, chosen, seed}),
  params_match, and summary (not written to sweep.json). A TrainingDiverged run is recorded, not fatal.
  """
  from research.train.loop import TrainingDiverged

  if train_fn is None:
    from research.train.loop import train as train_fn
  root = Path(workdir_root)
  root.mkdir(parents=True, exist_ok=True)
  runs = list(runs)
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise ValueError(f"duplicate run names in the sweep: {sorted({n for n in names if names.count(n) > 1})}")
  stage1: dict[tuple, list[int]] = {}  # group -> indices of its LR-search runs
  for i, r in enumerate(runs):
    if r.lr is not None and r.lr_grid:
      stage1.setdefault(r.group, []).append(i)
  missing = [r.name for i, r in enumerate(runs) if r.deferred and max(stage1.get(r.group, [i])) >= i]
  if missing:
    raise ValueError(
      f"run {missing[0]} chooses its learning rate, but no LR-search run of its group comes before "
      "it in the sweep (use the order plan() returns)"
    )
  configs = {r.name: _as_json(r.config(base_spec)) for r in runs if not r.deferred}
  known = {n: _state(root / n, c) for n, c in configs.items()}  # a conflicting workdir fails before training
  records = [_record(r, root, base_spec, configs.get(r.name)) for r in runs]
  selection: dict[tuple, dict] = {}
  trained_s: list[float] = []
  t0 = time.perf_counter()

  def select(group):
    chosen, results = choose_lr([records[i] for i in stage1[group]])
    selection[group] = {
      "grid": list(runs[stage1[group][0]].lr_grid),
      "val_accuracy": results,
      "chosen": chosen,
      "seed": runs[stage1[group][0]].seed,
    }
    for i in stage1[group]:
      records[i].update(lr_selection=selection[group], final=records[i]["lr"] == chosen)

  def remaining(k):  # runs from index k on that still need training (as far as is known now)
    return sum(1 for r in runs[k:] if known.get(_resolved(r, selection).name) not in ("finished", "diverged"))

  def eta(k):
    n = remaining(k)
    return f"ETA for the remaining {n} runs: " + (
      _duration(sum(trained_s) / len(trained_s) * n) if trained_s else "unknown"
    )

  for k, (run, rec) in enumerate(zip(runs, records, strict=True), 1):
    if run.deferred:
      if run.group not in selection:
        select(run.group)
      if selection[run.group]["chosen"] is None:
        rec.update(status="skipped", error="no learning rate of the grid finished without diverging")
        log(f"[{k}/{len(runs)}] {run.name}: skipped, every learning rate of the grid diverged")
        continue
      run = _resolved(run, selection)
      configs[run.name] = _as_json(run.config(base_spec))
      known[run.name] = _state(root / run.name, configs[run.name])
      rec.update(_record(run, root, base_spec, configs[run.name]), final=True, lr_selection=selection[run.group])
    workdir = root / run.name
    if known[run.name] == "finished":
      rec.update(status="reused", summary=json.loads((workdir / "summary.json").read_text()))
      log(f"[{k}/{len(runs)}] {run.name}: finished earlier, summary reused; {eta(k)}")
    else:
      verb = "resuming interrupted run" if known[run.name] == "interrupted" else "training"
      log(f"[{k}/{len(runs)}] {run.name}: {verb}; {eta(k - 1)}")
      tic = time.perf_counter()
      try:
        rec.update(summary=train_fn(run.config(base_spec), workdir, progress=progress), status="done")
      except TrainingDiverged as e:
        rec.update(status="diverged", error=str(e))
      except BaseException as e:
        rec.update(status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed", error=repr(e))
        _write(root, base_spec, records, time.perf_counter() - t0, names)
        raise
      trained_s.append(time.perf_counter() - tic)
      known[run.name] = "finished" if rec["status"] == "done" else "diverged"
      log(f"[{k}/{len(runs)}] {run.name} {rec['status']} in {_duration(trained_s[-1])}; {eta(k)}")
    _write(root, base_spec, records, time.perf_counter() - t0, names)

  for group in stage1.keys() - selection.keys():  # e.g. one seed: nothing was deferred
    select(group)
  diverged = [r["name"] for r in records if r["status"] == "diverged"]
  if diverged:
    log(f"warning: {len(diverged)} run(s) diverged: {', '.join(diverged)}")
  log(
    f"sweep of {len(runs)} runs finished in {_duration(time.perf_counter() - t0)}: {len(trained_s)} trained, "
    f"{sum(r['status'] == 'reused' for r in records)} reused; {root / SWEEP_FILE}"
  )
  _write(root, base_spec, records, time.perf_counter() - t0, names)
  return records


def summaries(records: Iterable[dict]) -> list[dict]:
  """Summaries of the final runs (what a results table aggregates), each with the run's lr, name and overrides."""
  return [
    {**r["summary"], "lr": r["lr"], "run": r["name"], "overrides": r["overrides"]}
    for r in records
    if r["final"] and r["summary"]
  ]


def _resolved(run: Run, selection: dict) -> Run:
  if run.deferred and selection.get(run.group, {}).get("chosen") is not None:
    return dataclasses.replace(run, lr=selection[run.group]["chosen"])
  return run


def _record(run: Run, root: Path, base_spec: str, config_json: dict | None) -> dict:
  lr = run.lr if config_json is None else config_json["train"]["learning_rate"]
  return {
    "name": run.name,
    "variant": run.variant,
    "seed": run.seed,
    "lr": lr,
    "overrides": dict(run.overrides),
    "width": dict(run.width),
    "status": "pending",
    "final": not run.lr_grid or run.deferred,
    "workdir": str(root / run.name),
    "summary_path": f"{run.name}/summary.json",
    "spec": None if run.deferred else run.spec(base_spec),
    "lr_selection": None,
    "params_match": dict(run.matched) or None,
    "summary": None,
  }


def _write(root: Path, base_spec: str, records: list[dict], wall_s: float, planned: Sequence[str]) -> None:
  """Merge this sweep's records into root/sweep.json (records of other sweeps in the same root are kept;
  `planned` names, e.g. the placeholders of runs whose learning rate is chosen later, are replaced)."""
  path = root / SWEEP_FILE
  mine = [{k: v for k, v in r.items() if k not in ("summary", "workdir")} for r in records]
  names = {r["name"] for r in mine} | set(planned)
  old = json.loads(path.read_text())["runs"] if path.exists() else []
  doc = {
    "base_spec": base_spec,
    "wall_s_this_invocation": round(wall_s, 3),
    "runs": [r for r in old if r["name"] not in names] + mine,
  }
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(doc, indent=2, default=str))
  tmp.replace(path)
