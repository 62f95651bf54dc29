"""provenance.json: everything needed to say where a number came from."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import jax

PACKAGES = (
  "jax",
  "jaxlib",
  "flax",
  "optax",
  "orbax-checkpoint",
  "grain",
  "ml-collections",
  "numpy",
  "sentencepiece",
  "research",
)


def _git(*args: str) -> str | None:
  try:
    out = subprocess.run(
      ["git", *args], capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent
    )
  except (OSError, subprocess.TimeoutExpired):
    return None
  return out.stdout.strip() if out.returncode == 0 else None


def provenance(config) -> dict:
  def version(p):
    try:
      return metadata.version(p)
    except metadata.PackageNotFoundError:
      return None

  status = _git("status", "--porcelain", "--untracked-files=no")
  return {
    "config": config.to_dict(),
    "git_sha": _git("rev-parse", "HEAD"),
    "git_dirty": None if status is None else bool(status),
    "packages": {p: version(p) for p in PACKAGES},
    "python": sys.version.split()[0],
    "platform": platform.platform(),
    "devices": [str(d) for d in jax.devices()],
    "device_kind": jax.devices()[0].device_kind,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "jax_platforms": os.environ.get("JAX_PLATFORMS", ""),
    "seeds": {"seed": config.seed, "data.seed": config.data.get("seed")},
    "argv": sys.argv,
  }


def write_provenance(workdir: Path, config) -> Path:
  path = Path(workdir) / "provenance.json"
  path.write_text(json.dumps(provenance(config), indent=2, sort_keys=True, default=str))
  return path
