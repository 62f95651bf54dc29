"""Loading `experiments/<name>.py[:k=v,k=v]` configs and validating them before anything is jit-ed."""

from __future__ import annotations

import ast
import importlib.util
import uuid
from pathlib import Path
from typing import Any

import ml_collections


def writable_dir(path: str | Path, what: str, remedy: str) -> Path:
  """`path` created if needed and probed for writing; else one ValueError naming `what` and the `remedy`."""
  path = Path(path)
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_test.{uuid.uuid4().hex}"  # one per process: the processes of a run probe the same workdir
    probe.write_text("ok")
    probe.unlink(missing_ok=True)
  except OSError as e:
    raise ValueError(f"{what} {str(path)!r} is not writable ({e.strerror or e}); {remedy}") from e
  return path


def _split_top_level(text: str) -> list[str]:
  """Split on commas that are not inside brackets or quotes: `a=(1,2),b='x,y'` -> 2 items."""
  items, depth, quote, start = [], 0, None, 0
  for i, ch in enumerate(text):
    if quote:
      quote = None if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      items.append(text[start:i])
      start = i + 1
  return items + [text[start:]]


def parse_overrides(arg: str | None) -> dict[str, Any]:
  """`"attention=linear,train.num_steps=200"` -> {"attention": "linear", "train.num_steps": 200}."""
  out: dict[str, Any] = {}
  for item in filter(None, (s.strip() for s in _split_top_level(arg or ""))):
    key, sep, raw = item.partition("=")
    if not sep or not key:
      raise ValueError(f"config override {item!r} is not of the form key=value")
    try:
      out[key.strip()] = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
      out[key.strip()] = raw.strip()
  return out


def _leaf_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for k, v in config.items():
    keys += _leaf_keys(v, f"{prefix}{k}.") if isinstance(v, ml_collections.ConfigDict) else [prefix + k]
  return keys


def _open_dicts(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Dotted prefixes of `*_cfg` sub-dicts, whose keys are free-form (validated by their consumer)."""
  out = []
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      out += [f"{prefix}{k}."] if k.endswith("_cfg") else _open_dicts(v, f"{prefix}{k}.")
  return out


def apply_overrides(
  config: ml_collections.ConfigDict, overrides: dict[str, Any], aliases: dict[str, str] | None = None
) -> ml_collections.ConfigDict:
  """Set dotted keys (or aliases of them) with type checks; an unknown key is a clear error."""
  aliases = aliases or {}
  valid = _leaf_keys(config)
  for key, value in overrides.items():
    path = aliases.get(key, key)
    open_dict = any(path.startswith(p) and path.count(".") == p.count(".") for p in _open_dicts(config))
    if path not in valid and not open_dict:
      raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(set(aliases) | set(valid)))}")
    *parents, leaf = path.split(".")
    node = config
    for p in parents:
      node = node[p]
    old = node.get(leaf)
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if isinstance(old, tuple) and isinstance(value, list):
      value = tuple(value)
    if old is not None and not isinstance(value, type(old)):
      raise ValueError(f"config key {key!r} expects {type(old).__name__}, got {value!r}")
    with node.ignore_type():
      node[leaf] = value
  return config


def load_config(spec: str) -> ml_collections.ConfigDict:
  """`path/to/experiment.py[:overrides]` -> the experiment's get_config(overrides)."""
  path_str, _, arg = spec.partition(":")
  path = Path(path_str)
  if path.suffix != ".py" or not path.is_file():
    raise ValueError(f"config {path_str!r} is not an existing .py file (expected e.g. experiments/listops.py)")
  module_spec = importlib.util.spec_from_file_location(f"_experiment_{path.stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} defines no get_config(arg)")
  return module.get_config(arg or None)


ALIASES = {
  "attention": "model.attention",
  "steps": "train.num_steps",
  "positions": "model.positions",
  "batch_size": "train.batch_size",
  "lr": "train.learning_rate",
}

MODEL_DEFAULTS = dict(
  attention="softmax",
  d_model=64,
  num_heads=4,
  num_layers=2,
  mlp_dim=128,
  mlp="gelu",
  dropout=0.0,
  positions="learned",
  remat_policy="none",
  scan_unroll=1,
  dtype="float32",
  pool="cls",
  max_len=0,
  conv_kernel=0,
  seq_softmax="ring",
)  # max_len 0: the data's length; seq_softmax: on a `seq` mesh axis, ring|allgather
TRAIN_DEFAULTS = dict(
  batch_size=32,
  eval_batch_size=256,
  num_steps=600,
  learning_rate=1e-3,
  warmup_steps=60,
  schedule="cosine",
  weight_decay=0.01,
  clip_norm=1.0,
  grad_accum=1,
  eval_every=100,
  log_every=25,
  keep_last=2,
  best_metric="val_accuracy",
  best_mode="max",
  init_from="",
  crash_after_checkpoint=-1,
)
# init_from: workdir of a pretrained run (research/train/init_from.py); crash_after_checkpoint: test hook


def base_config(
  task: str, data: dict | None = None, model: dict | None = None, train: dict | None = None
) -> ml_collections.ConfigDict:
  """The shared experiment skeleton: every option of the task's data Config (its defaults, then `data`),
  the tiny CPU model and training defaults (then `model`, `train`), and a data-parallel mesh."""
  import dataclasses

  from research.data import tasks

  c = ml_collections.ConfigDict()
  c.task = task
  c.seed = 0
  data_defaults = {f.name: f.default for f in dataclasses.fields(tasks.module(task).Config)}
  c.data = ml_collections.ConfigDict({**data_defaults, **(data or {})})
  c.model = ml_collections.ConfigDict({**MODEL_DEFAULTS, **(model or {})})
  c.model.attention_cfg = ml_collections.ConfigDict()
  c.train = ml_collections.ConfigDict({**TRAIN_DEFAULTS, **(train or {})})
  # device counts per mesh axis (research/train/sharding.py); -1 takes the remaining devices. `shape`: the older
  # positional form (data, fsdp, tensor[, seq]), used only when set
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, seq=1, shape=None))
  return c


LRA_PRESET = {  # LRA-scale model and schedule (accelerator); tasks add their data lengths
  "model": dict(d_model=256, num_heads=4, num_layers=4, mlp_dim=1024, dtype="bfloat16"),
  "train": dict(batch_size=32, num_steps=5_000, eval_every=500, learning_rate=5e-4, warmup_steps=500),
}


def finish(
  c: ml_collections.ConfigDict,
  arg: str | None,
  presets: dict[str, dict] | None = None,
  aliases: dict[str, str] | None = ALIASES,
) -> ml_collections.ConfigDict:
  """Apply `size=<preset>` from arg ("tiny" is the config as built; a preset is {key: value} or {section: {key:
  value}}, merged into the config recursively), then the other overrides (with `aliases`; None for configs that
  are not training configs)."""
  overrides = parse_overrides(arg)
  size, presets = overrides.pop("size", "tiny"), presets or {}
  if size != "tiny":
    if size not in presets:
      raise ValueError(f"unknown size {size!r}; choose one of {', '.join(['tiny', *presets])}")
    c.update(presets[size])
  return apply_overrides(c, overrides, aliases)
