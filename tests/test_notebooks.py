"""Every tutorial in notebooks/ runs top to bottom in a fresh Jupyter kernel (nbclient), in smoke mode.

The notebooks are jupytext `.py` files (percent format); `jupytext --sync` makes the paired `.ipynb`, which is
never committed. Smoke mode (`RESEARCH_SMOKE=1`) cuts steps and sizes so that all of them together stay under
~5 minutes on 2 CPU cores; a cell that raises fails the test with the cell and its traceback."""

from __future__ import annotations

import os
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))
EXPECTED = ["01_quickstart", "02_attention_maps", "03_polysemy", "04_long_context", "05_add_a_variant"]


def execute(nb: nbformat.NotebookNode, timeout: int = 600) -> nbformat.NotebookNode:
  """Run `nb` in a new python3 kernel with the repository root as working directory, in smoke mode."""
  old = os.environ.get("RESEARCH_SMOKE")
  os.environ["RESEARCH_SMOKE"] = "1"  # the kernel inherits this process's environment
  try:
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
  finally:
    if old is None:
      os.environ.pop("RESEARCH_SMOKE")
    else:
      os.environ["RESEARCH_SMOKE"] = old
  return nb


def test_every_tutorial_is_here():
  assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path):
  nb = execute(jupytext.read(path))
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code and all(c.execution_count for c in code)  # every code cell ran
  errors = [o for c in code for o in c.outputs if o.output_type == "error"]
  assert not errors, errors
  images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
  assert images, f"{path.name} shows no figure"


def test_a_failing_cell_fails_the_run():
  nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("1 / 0")])
  with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
    execute(nb, timeout=60)
