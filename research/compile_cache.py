"""Persistent XLA compilation cache: `research --compile-cache DIR ...` or RESEARCH_COMPILE_CACHE=DIR.

Every jit-compiled program (train step, eval step, benchmarks) is written to DIR and read back by later
processes that compile the same program with the same jax/XLA version, flags and devices, so a resumed run or
a sweep's next run skips XLA compilation. Every program is cached, however small or fast to compile. The cache
is trusted code: do not share DIR with users you do not trust (JAX documentation).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from research.config import writable_dir

ENV = "RESEARCH_COMPILE_CACHE"


def enable(directory: str | os.PathLike) -> Path:
  """Turn the cache on for this process (before the first compilation); returns the absolute directory."""
  path = writable_dir(
    Path(directory).expanduser().absolute(), "compile cache directory", f"choose another --compile-cache / {ENV}"
  )
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path


def entries(directory: str | os.PathLike) -> int:
  """Number of cached programs in `directory`."""
  path = Path(directory)
  return sum(1 for p in path.iterdir() if not p.name.startswith(".")) if path.is_dir() else 0
