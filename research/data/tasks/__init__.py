"""Task registry: ``build(name, data_cfg) -> Task`` over the modules of this package.

Each task module defines a frozen ``Config`` dataclass and ``build(cfg) -> base.Task`` (see base.py).
Modules are imported on first use, so a task whose corpus is not installed costs nothing until asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping

from research.data.tasks.base import Task

NAMES = ("listops", "text_cls", "retrieval", "pathfinder", "mqar", "wic", "sentiment", "xling", "mlm")


def module(name: str):
  if name not in NAMES:
    raise ValueError(f"unknown task {name!r}; choose one of {', '.join(NAMES)}")
  return importlib.import_module(f"{__name__}.{name}")


def make_config(name: str, data_cfg: Mapping | None = None):
  """The task's Config from a plain mapping; unknown keys are named in the error with the valid ones."""
  config_cls = module(name).Config
  fields = {f.name for f in dataclasses.fields(config_cls)}
  data_cfg = dict(data_cfg or {})
  unknown = sorted(set(data_cfg) - fields)
  if unknown:
    raise ValueError(f"task {name!r} has no option(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
  return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data_cfg.items()})


def build(name: str, data_cfg: Mapping | None = None) -> Task:
  return module(name).build(make_config(name, data_cfg))
