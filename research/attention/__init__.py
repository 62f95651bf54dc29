"""Attention registry: every mixer is a linen Module with the same call signature.

    out_BxLxHxD = Mixer(cfg)(q_BxLxHxD, k_BxSxHxD, v_BxSxHxD, segments, causal=False)

A variant registers itself with its capabilities; `build(name, overrides)` validates the overrides
against the variant's frozen Config dataclass. Importing this package imports every module in it, so a
new family file is registered (and put under the conformance suite) just by existing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class Capabilities:
  """What a variant promises; the conformance suite tests exactly these claims."""

  supports_causal: bool
  supports_packing: bool
  length_invariant: bool  # output for a sequence does not depend on how much padding follows it
  positions: tuple[str, ...]  # position schemes of the encoder this mixer works with
  complexity: str  # e.g. "O(N^2 d)"
  state_size: Callable[[int, int, int], int]  # (L, H, D) -> bytes of attention state per sequence (fp32)
  paper: str = ""
  implied_weights: bool = True  # False: no attention matrix exists (e.g. Fourier mixing); tools must skip it


_REGISTRY: dict[str, tuple[type[nn.Module], Capabilities]] = {}


def register(name: str, **caps: Any) -> Callable[[type[nn.Module]], type[nn.Module]]:
  """Class decorator: `@register("linear", supports_causal=True, ...)`."""

  def deco(cls: type[nn.Module]) -> type[nn.Module]:
    if name in _REGISTRY:
      raise ValueError(f"attention {name!r} is registered twice")
    if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
      raise TypeError(f"{cls.__name__} must define a frozen dataclass `Config`")
    _REGISTRY[name] = (cls, Capabilities(**caps))
    cls.registry_name = name
    return cls

  return deco


def names() -> list[str]:
  return sorted(_REGISTRY)


def _lookup(name: str) -> tuple[type[nn.Module], Capabilities]:
  if name not in _REGISTRY:
    raise ValueError(f"unknown attention {name!r}; choose one of {', '.join(names())}")
  return _REGISTRY[name]


def get(name: str) -> type[nn.Module]:
  return _lookup(name)[0]


def capabilities(name: str) -> Capabilities:
  return _lookup(name)[1]


def config_fields(name: str) -> set[str]:
  """The option names of a variant's Config."""
  return {f.name for f in dataclasses.fields(get(name).Config)}


def length_options(name: str, max_len: int) -> dict[str, int]:
  """{"max_len": max_len} for variants whose parameters are sized by the longest sequence (linformer,
  synthesizer), {} for the others: what a model built for `max_len` tokens gives its mixer."""
  return {"max_len": max_len} if "max_len" in config_fields(name) else {}


def make_config(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
  """The variant's frozen Config with `overrides` (a mapping, or already that Config) applied; unknown keys are a
  clear error."""
  cls = get(name)
  if isinstance(overrides, cls.Config):
    return overrides
  fields = config_fields(name)
  unknown = sorted(set(overrides or {}) - fields)
  if unknown:
    raise ValueError(
      f"unknown option(s) {', '.join(map(repr, unknown))} for attention {name!r}; "
      f"valid options: {', '.join(sorted(fields)) or '(none)'}"
    )
  return cls.Config(**dict(overrides or {}))


def build(name: str, overrides: Mapping[str, Any] | None = None, **module_kwargs: Any) -> nn.Module:
  return get(name)(cfg=make_config(name, overrides), **module_kwargs)


def check_call(name: str, segments: Any, causal: bool) -> None:
  """Raise a clear ValueError for a call the variant does not support (at trace time, before XLA)."""
  caps = capabilities(name)
  if causal and not caps.supports_causal:
    raise ValueError(f"attention {name!r} does not support causal=True")
  if segments.max_segments > 1 and not caps.supports_packing:
    raise ValueError(f"attention {name!r} does not support packed rows (max_segments > 1)")


def _import_families() -> None:
  """Import every module of this package: a family file registers its variants on import."""
  import importlib
  import pkgutil

  for info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{info.name}")


_import_families()
