"""Result files: tables and figures from run workdirs (tables.py, figures.py, runs.py) and the JSON + markdown
(+ PNG) triple that every result writer (benchmarks, evaluations) leaves under results/."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_files(
  directory: str | Path,
  name: str,
  result: dict[str, Any],
  markdown: str,
  plot: Callable[[dict[str, Any], Path], Any] | None = None,
  png_suffix: str = "",
) -> dict[str, Path]:
  """`<directory>/<name>.json` (sorted keys) and `<name>.md`, and `<name><png_suffix>.png` drawn by `plot`."""
  base = Path(directory)
  base.mkdir(parents=True, exist_ok=True)
  paths = {"json": base / f"{name}.json", "md": base / f"{name}.md"}
  paths["json"].write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
  paths["md"].write_text(markdown)
  if plot is not None:
    paths["png"] = base / f"{name}{png_suffix}.png"
    plot(result, paths["png"])
  return paths
